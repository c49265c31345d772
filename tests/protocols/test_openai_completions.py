"""Text completion and embedding shapes, checked against the official openai SDK types."""

from __future__ import annotations

import base64
import json
from array import array
from typing import Any

import pytest
from openai.types import Completion, CreateEmbeddingResponse

from kingpost.protocols import (
    CompletionRequest,
    CompletionStream,
    EmbeddingRequest,
    InvalidParameterError,
    TokenLogprob,
    TopLogprob,
    Usage,
    completion,
    embeddings,
    parse_request,
    parse_sse,
)


def test_completion_is_a_valid_sdk_completion() -> None:
    result = completion(" Paris.", model="gemma", finish_reason="length", usage=Usage.of(5, 2))
    parsed = Completion.model_validate(result.model_dump(mode="json"))
    assert parsed.choices[0].text == " Paris."
    assert parsed.choices[0].finish_reason == "length"
    assert parsed.object == "text_completion"


def test_completion_logprobs_use_the_column_layout() -> None:
    logprobs = [
        TokenLogprob(
            token=" Pa", logprob=-1.0, top_logprobs=[TopLogprob(token=" Pa", logprob=-1.0)]
        ),
        TokenLogprob(token="ris", logprob=-0.1),
    ]
    parsed = Completion.model_validate(
        completion(" Paris", model="gemma", logprobs=logprobs).model_dump(mode="json")
    )
    assert parsed.choices[0].logprobs is not None
    assert parsed.choices[0].logprobs.tokens == [" Pa", "ris"]
    assert parsed.choices[0].logprobs.text_offset == [0, 3]
    assert parsed.choices[0].logprobs.top_logprobs == [{" Pa": -1.0}, {}]


def test_completion_stream_chunks_validate() -> None:
    stream = CompletionStream(model="gemma", include_usage=True)
    text = stream.text(" Pa") + stream.text("ris") + stream.finish("stop", usage=Usage.of(3, 2))
    frames = parse_sse(text)
    assert frames[-1] == (None, "[DONE]")
    payloads = [json.loads(data) for _, data in frames[:-1]]
    # text chunks carry finish_reason null, as the API streams them (the SDK type omits null)
    assert [p["choices"][0]["finish_reason"] for p in payloads[:2]] == [None, None]
    assert "".join(p["choices"][0]["text"] for p in payloads if p["choices"]) == " Paris"
    final, usage = (Completion.model_validate(p) for p in payloads[2:])
    assert final.choices[0].finish_reason == "stop"
    assert usage.choices == [] and usage.usage is not None


def test_completion_request_splits_prompts() -> None:
    assert parse_request(CompletionRequest, {"prompt": "a"}).prompts() == ["a"]
    assert parse_request(CompletionRequest, {"prompt": [1, 2]}).prompts() == [[1, 2]]
    assert parse_request(CompletionRequest, {"prompt": ["a", "b"]}).prompts() == ["a", "b"]


def test_completion_request_defaults_to_sixteen_tokens() -> None:
    assert parse_request(CompletionRequest, {"prompt": "a"}).max_tokens == 16


def test_completion_logprobs_over_five_are_refused() -> None:
    with pytest.raises(InvalidParameterError) as caught:
        parse_request(CompletionRequest, {"prompt": "a", "logprobs": 6})
    assert caught.value.param == "logprobs"


def test_embeddings_are_a_valid_sdk_embedding_response() -> None:
    result = embeddings([[0.5, -1.0], [0.25, 0.0]], model="minilm", prompt_tokens=4)
    parsed = CreateEmbeddingResponse.model_validate(result.model_dump(mode="json"))
    assert [item.index for item in parsed.data] == [0, 1]
    assert parsed.data[0].embedding == [0.5, -1.0]
    assert parsed.usage.prompt_tokens == 4


def test_base64_embeddings_are_little_endian_float32() -> None:
    result = embeddings([[0.5, -1.0]], model="minilm", prompt_tokens=1, encoding_format="base64")
    encoded = result.data[0].embedding
    assert isinstance(encoded, str)
    assert array("f", base64.b64decode(encoded)).tolist() == [0.5, -1.0]


def test_embedding_request_refuses_an_empty_input() -> None:
    with pytest.raises(InvalidParameterError) as caught:
        parse_request(EmbeddingRequest, {"input": []})
    assert "input" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "inputs"),
    [
        ("hello", ["hello"]),
        (["a", "b"], ["a", "b"]),
        ([101, 7592, 102], [[101, 7592, 102]]),
        ([[101, 102], [101, 7592, 102]], [[101, 102], [101, 7592, 102]]),
    ],
)
def test_embedding_input_takes_the_four_openai_shapes(value: Any, inputs: list[Any]) -> None:
    assert parse_request(EmbeddingRequest, {"input": value}).inputs() == inputs


@pytest.mark.parametrize(
    "value", ["", [], [""], ["a", 1], [[]], [True, False], {"text": "a"}, None, [["a"]]]
)
def test_malformed_embedding_input_is_refused_naming_input(value: Any) -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse_request(EmbeddingRequest, {"input": value})
    assert info.value.param == "input"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"encoding_format": "int8"}, "encoding_format"),
        ({"dimensions": 0}, "dimensions"),
        ({"dimensions": "64"}, "dimensions"),
        ({"dimensions": True}, "dimensions"),
        ({"model": 3}, "model"),
    ],
)
def test_invalid_embedding_parameters_are_refused_naming_them(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse_request(EmbeddingRequest, {"input": "a", **body})
    assert info.value.param == param


def test_null_embedding_options_take_their_defaults() -> None:
    body = parse_request(EmbeddingRequest, {"input": "a", "model": None, "encoding_format": None})
    assert (body.model, body.encoding_format) == ("", "float")
