"""The shared LLM layer served for real, through the official OpenAI and Anthropic SDKs.

A ``kingpost serve`` of tests/models/scripted_llm runs the scripted engine (it
replays the tokens the request spells out, split on "|"), so these checks need
no model weights.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import MODELS
from tests.engines.conftest import serve_from_checkout

CALL = '{"name": "get_weather", |"arguments": {"city": |"Paris"}}'
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve_from_checkout(MODELS / "scripted_llm", tmp_path_factory) as server:
        yield server


@pytest.fixture(scope="module")
def platform_client(server: ServerProcess) -> openai.OpenAI:
    """The OpenAI SDK on the hosted platform's URL grammar."""
    url = server.url("/environments/production/sync/v1")
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_a_chat_completion_stops_at_a_stop_split_across_tokens(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="scripted", messages=user("Hello wo|rld E|ND more"), stop=["END"]
    )
    assert reply.choices[0].message.content == "Hello world "
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_a_streamed_chat_completion_accumulates_and_reports_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="scripted",
        messages=user("Hel|lo| there"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_a_streamed_tool_call_sends_its_name_first_then_its_arguments_as_written(
    client: openai.OpenAI,
) -> None:
    tool: Any = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
    stream = client.chat.completions.create(
        model="scripted", messages=user(CALL), tools=[tool], stream=True
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    calls = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
    assert [call.index for call in calls] == [0, 0, 0]
    assert calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
    assert [call.function.arguments for call in calls if call.function] == [
        "",
        '{"city": ',
        '"Paris"}',
    ]
    assert all(call.id is None for call in calls[1:])
    assert all(not c.choices[0].delta.content for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_the_sdk_stream_helper_sees_the_arguments_grow(client: openai.OpenAI) -> None:
    """``client.chat.completions.stream`` (the SDK's own accumulator) reports each
    arguments piece with the arguments so far, then the whole call."""
    tool: Any = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
    with client.chat.completions.stream(
        model="scripted", messages=user(CALL), tools=[tool]
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    growing = [e.arguments for e in events if e.type == "tool_calls.function.arguments.delta"]
    assert growing == ["", '{"city": ', '{"city": "Paris"}']  # the first: the name's chunk
    (done,) = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert (done.name, done.arguments) == ("get_weather", '{"city": "Paris"}')
    (call,) = final.choices[0].message.tool_calls or []
    assert call.function.arguments == '{"city": "Paris"}'  # type: ignore[union-attr]


def test_a_streamed_response_sends_function_call_arguments_as_written(
    client: openai.OpenAI,
) -> None:
    tool: Any = {"type": "function", "name": "get_weather", "parameters": WEATHER}
    with client.responses.stream(model="scripted", input=CALL, tools=[tool]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds.count("response.output_item.added") == 1
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert deltas == ['{"city": ', '"Paris"}']
    (call,) = final.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert (call.arguments, call.status) == ('{"city": "Paris"}', "completed")
    stored = client.responses.retrieve(final.id)
    assert stored.output[0].type == "function_call"
    assert stored.output[0].arguments == '{"city": "Paris"}'


def test_n_choices_each_get_their_own_seed(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="scripted", messages=user("<seed>"), n=3, seed=40)
    assert [choice.message.content for choice in reply.choices] == ["40", "41", "42"]


def test_streaming_several_choices_is_refused_by_name(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="scripted", messages=user("a"), n=2, stream=True)
    assert "n=1" in str(refused.value)


def test_a_chat_stream_that_fails_midway_raises_in_the_sdk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="scripted", messages=user("Hel|lo|<error>"), stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError, match="generation failed"):
        for chunk in stream:
            received += [c.delta.content or "" for c in chunk.choices]
    assert "".join(received) == "Hello"


def test_a_completion_at_max_tokens_ends_with_length(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="scripted", prompt="a|b|c", max_tokens=2)
    assert reply.choices[0].text == "ab"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (5, 2)


def test_a_streamed_response_gives_the_text(client: openai.OpenAI) -> None:
    with client.responses.stream(model="scripted", input="Bon|jour") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Bon", "jour"]
    assert final.output_text == "Bonjour"
    assert final.usage is not None and final.usage.output_tokens == 2


def test_a_message_names_its_stop_sequence(claude: anthropic.Anthropic) -> None:
    reply = claude.messages.create(
        model="scripted",
        max_tokens=50,
        messages=user("one ST|OP two"),
        stop_sequences=["STOP"],
    )
    assert [block.type for block in reply.content] == ["text"]
    assert reply.content[0].type == "text" and reply.content[0].text == "one "
    assert (reply.stop_reason, reply.stop_sequence) == ("stop_sequence", "STOP")


def test_a_streamed_tool_use_sends_its_input_as_written(claude: anthropic.Anthropic) -> None:
    tool: Any = {"name": "get_weather", "input_schema": WEATHER}
    with claude.messages.stream(
        model="scripted", max_tokens=50, messages=user(CALL), tools=[tool]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    pieces = [
        event.delta.partial_json
        for event in events
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta"
    ]
    assert pieces == ['{"city": ', '"Paris"}']
    (block,) = final.content
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("get_weather", {"city": "Paris"})
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 3


def test_a_message_stream_that_fails_midway_raises_in_the_sdk(
    claude: anthropic.Anthropic,
) -> None:
    with (
        pytest.raises(anthropic.APIStatusError, match="generation failed"),
        claude.messages.stream(
            model="scripted", max_tokens=50, messages=user("a|<error>")
        ) as stream,
    ):
        stream.get_final_message()


# ---- stored responses and token counts under the platform's URL grammar -----------------


def test_a_stored_response_is_read_listed_and_deleted_through_a_platform_url(
    platform_client: openai.OpenAI,
) -> None:
    made = platform_client.responses.create(model="scripted", input="Bon|jour")
    assert platform_client.responses.retrieve(made.id).output_text == "Bonjour"
    items = platform_client.responses.input_items.list(made.id)
    assert [item.content for item in items.data] == ["Bon|jour"]  # type: ignore[union-attr]
    platform_client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        platform_client.responses.retrieve(made.id)


def test_a_background_response_is_replayed_and_cancelled_through_a_platform_url(
    platform_client: openai.OpenAI,
) -> None:
    made = platform_client.responses.create(model="scripted", input="a|b|c", background=True)
    events = list(platform_client.responses.retrieve(made.id, stream=True, starting_after=0))
    assert events[0].sequence_number == 1 and events[-1].type == "response.completed"
    # finished already: cancelling answers the response as it ended
    assert platform_client.responses.cancel(made.id).status == "completed"


def test_cancelling_a_foreground_response_is_refused_in_openai_shape_on_a_platform_url(
    platform_client: openai.OpenAI,
) -> None:
    made = platform_client.responses.create(model="scripted", input="Hi")
    with pytest.raises(openai.BadRequestError, match="only a background response"):
        platform_client.responses.cancel(made.id)


@pytest.mark.parametrize("prefix", ["/environments/production/sync", "/production/sync"])
def test_token_counts_answer_under_the_platform_prefixes(
    server: ServerProcess, prefix: str
) -> None:
    openai_client = openai.OpenAI(base_url=server.url(prefix + "/v1"), api_key="unused")
    counted = openai_client.responses.input_tokens.count(model="scripted", input="Hello")
    claude = anthropic.Anthropic(base_url=server.url(prefix), api_key="unused", max_retries=0)
    messages = claude.messages.count_tokens(model="scripted", messages=user("Hello"))
    assert counted.input_tokens == messages.input_tokens > len("Hello")


# ---- client deadlines on streams ----------------------------------------------------------

SLOW = "|".join(["<pause>"] * 50)  # 5 s of nothing


def test_a_stream_past_its_deadline_ends_with_an_openai_error_event(server: ServerProcess) -> None:
    client = openai.OpenAI(
        base_url=server.url("/v1"),
        api_key="unused",
        max_retries=0,
        default_headers={"Request-Timeout-Ms": "400"},
    )
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="scripted", messages=user(f"Hel|lo|{SLOW}|never"), stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError, match="deadline"):
        for chunk in stream:
            received += [c.delta.content or "" for c in chunk.choices]
    assert "".join(received) == "Hello"
    assert time.monotonic() - started < 3  # stopped at the deadline, not at the end


def test_a_stream_past_its_deadline_ends_with_an_anthropic_error_event(
    server: ServerProcess,
) -> None:
    at = str(int((time.time() + 0.4) * 1000))
    claude = anthropic.Anthropic(
        base_url=server.url(""),
        api_key="unused",
        max_retries=0,
        default_headers={"Request-Deadline-Ms": at},
    )
    started = time.monotonic()
    with (
        pytest.raises(anthropic.APIStatusError, match="deadline"),
        claude.messages.stream(
            model="scripted", max_tokens=100, messages=user(f"a|{SLOW}|never")
        ) as stream,
    ):
        stream.get_final_message()
    assert time.monotonic() - started < 3


def test_a_stream_whose_first_chunk_is_past_the_deadline_is_a_504(server: ServerProcess) -> None:
    started = time.monotonic()
    response = httpx.post(
        server.url("/v1/completions"),
        json={"model": "scripted", "prompt": f"{SLOW}|late", "stream": True},
        headers={"Request-Timeout-Ms": "300"},
        timeout=30,
    )
    assert response.status_code == 504
    assert "timeout" in response.json()["error"]["message"]
    assert time.monotonic() - started < 3
