"""Chat completion shapes, checked against the official openai SDK types."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from kingpost.protocols import (
    ChatCompletionRequest,
    ChatCompletionStream,
    FunctionCall,
    InvalidParameterError,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
    chat_completion,
    openai_stream_error,
    parse_request,
    parse_sse,
)
from kingpost.server.errors import ErrorDialect, ErrorTable

MESSAGES = [{"role": "user", "content": "Hi"}]


def test_chat_completion_is_a_valid_sdk_chat_completion() -> None:
    result = chat_completion(text="Hello!", model="gemma", usage=Usage.of(3, 2))
    parsed = ChatCompletion.model_validate(result.model_dump(mode="json"))
    assert parsed.choices[0].message.content == "Hello!"
    assert parsed.choices[0].finish_reason == "stop"
    assert parsed.usage is not None and parsed.usage.total_tokens == 5
    assert parsed.id.startswith("chatcmpl-")


def test_tool_calls_default_the_finish_reason_to_tool_calls() -> None:
    call = ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments="{}"))
    result = chat_completion(model="gemma", tool_calls=[call])
    parsed = ChatCompletion.model_validate(result.model_dump(mode="json"))
    assert parsed.choices[0].finish_reason == "tool_calls"
    assert parsed.choices[0].message.tool_calls is not None
    assert parsed.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_logprobs_validate_as_sdk_logprobs() -> None:
    logprobs = [
        TokenLogprob(token="Hi", logprob=-0.5, top_logprobs=[TopLogprob(token="Hi", logprob=-0.5)])
    ]
    result = chat_completion(text="Hi", model="gemma", logprobs=logprobs)
    parsed = ChatCompletion.model_validate(result.model_dump(mode="json"))
    assert parsed.choices[0].logprobs is not None
    assert parsed.choices[0].logprobs.content is not None
    assert parsed.choices[0].logprobs.content[0].logprob == -0.5


def test_stream_chunks_validate_and_share_one_id() -> None:
    stream = ChatCompletionStream(model="gemma")
    text = stream.role() + stream.text("Hel") + stream.text("lo") + stream.finish("length")
    frames = parse_sse(text)
    assert frames[-1] == (None, "[DONE]")
    chunks = [ChatCompletionChunk.model_validate(json.loads(data)) for _, data in frames[:-1]]
    assert {chunk.id for chunk in chunks} == {stream.id}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "Hello"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stream_deltas_omit_unset_fields() -> None:
    stream = ChatCompletionStream(model="gemma")
    ((_, data),) = parse_sse(stream.text("x"))
    assert json.loads(data)["choices"][0]["delta"] == {"content": "x"}


def test_stream_sends_a_usage_chunk_with_no_choices_when_asked() -> None:
    stream = ChatCompletionStream(model="gemma", include_usage=True)
    frames = parse_sse(stream.finish("stop", usage=Usage.of(4, 1)))
    usage_chunk = ChatCompletionChunk.model_validate(json.loads(frames[-2][1]))
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None and usage_chunk.usage.completion_tokens == 1


def test_stream_tool_call_chunk_validates() -> None:
    stream = ChatCompletionStream(model="gemma")
    ((_, data),) = parse_sse(stream.tool_call(0, "call_1", "add", '{"a": 1}'))
    chunk = ChatCompletionChunk.model_validate(json.loads(data))
    tool_calls = chunk.choices[0].delta.tool_calls
    assert tool_calls is not None and tool_calls[0].function is not None
    assert tool_calls[0].function.arguments == '{"a": 1}'


def test_request_reads_limits_stop_and_usage_option() -> None:
    request = parse_request(
        ChatCompletionRequest,
        {
            "messages": MESSAGES,
            "max_tokens": 5,
            "max_completion_tokens": 7,
            "stop": "\n",
            "stream_options": {"include_usage": True},
        },
    )
    assert request.output_token_limit == 7
    assert request.stop_sequences == ["\n"]
    assert request.include_usage


def test_message_text_joins_text_parts() -> None:
    request = parse_request(
        ChatCompletionRequest,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ]
        },
    )
    assert request.messages[0].text() == "ab"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MESSAGES, "temperature": 3}, "temperature"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": []}, "messages"),
        ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": MESSAGES, "response_format": {"type": "json_schema"}}, "response_format"),
    ],
)
def test_invalid_parameters_are_named(body: dict, param: str) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        parse_request(ChatCompletionRequest, body)
    assert caught.value.param == param
    assert caught.value.status_code == 400


def test_tool_choice_must_name_a_given_tool() -> None:
    body = {
        "messages": MESSAGES,
        "tools": [{"type": "function", "function": {"name": "a"}}],
        "tool_choice": {"type": "function", "function": {"name": "b"}},
    }
    with pytest.raises(InvalidParameterError, match="unknown tool 'b'"):
        parse_request(ChatCompletionRequest, body)


def test_openai_error_response_has_the_openai_shape() -> None:
    error = InvalidParameterError("temperature", "must be at most 2")
    response = ErrorTable().reply(error, ErrorDialect.OPENAI)
    assert response.status == 400
    assert json.loads(response.body) == {
        "error": {
            "message": "temperature: must be at most 2",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": None,
        }
    }


def test_stream_error_is_what_the_openai_sdk_raises_on() -> None:
    ((event, data),) = parse_sse(openai_stream_error("engine failed"))
    assert event is None
    assert json.loads(data)["error"]["message"] == "engine failed"
