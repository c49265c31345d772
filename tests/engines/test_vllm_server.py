"""`kingpost serve examples/vllm-chat` end to end on a GPU, through the official SDKs.

Qwen2.5-0.5B-Instruct runs on vLLM; nothing is mocked and nothing is downloaded:
the model must already be in the local Hugging Face cache
(`hf download Qwen/Qwen2.5-0.5B-Instruct`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from kingpost.errors import ConfigError
from kingpost.testing import ServerProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vllm-chat"
MODEL_ID = "Qwen/Qwen2.5-0.5B-Instruct"
MODEL = "qwen2.5-0.5b-instruct"


def _skip_reason() -> str | None:
    """Why these tests cannot run here, or None when they can."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed: pip install 'kingpost[vllm]' (needs an NVIDIA GPU)"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed, so there is no CUDA to run vLLM on"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is available; the vLLM engine runs on GPUs only"
    from kingpost.engines.vllm import resolve_model_source

    try:
        resolve_model_source(MODEL_ID, None)
    except ConfigError:
        return f"{MODEL_ID} is not in the local Hugging Face cache: hf download {MODEL_ID}"
    return None


SKIP_REASON = _skip_reason()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]

PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    # debug logging: the engine logs each vLLM request it aborts
    process = ServerProcess(
        EXAMPLE, "--log-level", "debug", env={"HF_HUB_OFFLINE": "1"}, startup_timeout=600
    )
    process.start()
    yield process
    process.stop(grace=60)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [MODEL]


def test_chat_completion_reports_true_usage_and_length(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("Count from one to fifty."), max_tokens=6, temperature=0
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 6 and reply.usage.prompt_tokens > 10
    assert reply.choices[0].message.content


def test_chat_completion_stops_on_its_own(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("Reply with the single word: yes"), max_tokens=50, temperature=0
    )
    assert reply.choices[0].finish_reason == "stop"
    assert "yes" in (reply.choices[0].message.content or "").lower()


def test_chat_stream_ends_with_usage_when_asked(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=ask("Count from one to fifty."),
            max_completion_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text and finish == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_streamed_and_whole_chat_replies_agree(client: openai.OpenAI) -> None:
    args = {"model": MODEL, "messages": ask("Say hello."), "max_tokens": 12, "temperature": 0}
    whole = client.chat.completions.create(**args).choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**args, stream=True)
        if c.choices
    )
    assert streamed == whole


def test_chat_logprobs_greedy_token_is_the_top_one(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("Hi"), max_tokens=3, temperature=0, logprobs=True, top_logprobs=3
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == 3
    for item in content:
        assert len(item.top_logprobs) == 3
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob, abs=1e-3)


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ask("Invent a person."),
        max_tokens=80,
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


def test_stop_sequence_cuts_the_completion(client: openai.OpenAI) -> None:
    args = {"model": MODEL, "prompt": "1, 2, 3, 4,", "max_tokens": 16, "temperature": 0}
    full = client.completions.create(**args).choices[0].text
    word = full.split()[2]
    cut = client.completions.create(**args, stop=[word])
    assert cut.choices[0].text == full[: full.index(word)]
    assert cut.choices[0].finish_reason == "stop"


def test_same_seed_same_sample(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        reply = client.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=seed
        )
        return str(reply.choices[0].text)

    assert sample(7) == sample(7)
    assert len({sample(7), sample(8), sample(9)}) > 1


def test_eight_concurrent_streams_all_complete(server: ServerProcess) -> None:
    client = openai.AsyncOpenAI(
        base_url=server.url("/v1"), api_key="unused", max_retries=0, timeout=120
    )

    async def one(index: int) -> tuple[str | None, int]:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=ask(f"Tell story number {index}."),
            max_tokens=24,
            temperature=0.8,
            seed=index,
            stream=True,
            stream_options={"include_usage": True},
        )
        finish, used = None, 0
        async for chunk in stream:
            if chunk.choices:
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                used = chunk.usage.completion_tokens
        return finish, used

    async def all_of_them() -> list[tuple[str | None, int]]:
        async with client:
            return await asyncio.gather(*(one(i) for i in range(8)))

    results = asyncio.run(all_of_them())
    assert all(finish in ("stop", "length") and 0 < used <= 24 for finish, used in results)


def aborts_logged(server: ServerProcess) -> int:
    return server.logs().count("aborting vLLM request")


def test_disconnect_aborts_the_vllm_request(server: ServerProcess) -> None:
    before = aborts_logged(server)
    body = {"prompt": "Once upon a time", "max_tokens": 3000, "temperature": 1.0, "stream": True}
    with httpx.stream("POST", server.url("/v1/completions"), json=body, timeout=60) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(20)]  # generation is under way
    assert any(line.startswith("data:") for line in received)
    deadline = time.monotonic() + 5
    while aborts_logged(server) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert aborts_logged(server) == before + 1, "the request was not aborted after the disconnect"
    # and the engine serves the next request normally
    reply = httpx.post(server.url("/v1/completions"), json={"prompt": "Hi", "max_tokens": 2})
    assert reply.status_code == 200
