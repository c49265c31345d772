"""kingpost init DIR [--openai]: a model directory that serves as it is."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from kingpost.testing import InProcessServer, ServerProcess

Start = Callable[..., ServerProcess]


def init(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kingpost", "init", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_init_writes_a_config_and_a_model(tmp_path: Path) -> None:
    result = init(tmp_path / "new-model")
    assert result.returncode == 0
    assert "kingpost serve" in result.stdout
    assert (tmp_path / "new-model" / "config.yaml").read_text().startswith("model_name: new-model")
    assert "class Model" in (tmp_path / "new-model" / "model" / "model.py").read_text()


def test_init_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = init(tmp_path)
    assert result.returncode == 2
    assert "not empty" in result.stderr
    assert not (tmp_path / "config.yaml").exists()


def test_the_scaffolded_model_serves_predict(
    start_in_process: Callable[..., InProcessServer], tmp_path: Path
) -> None:
    assert init(tmp_path / "m").returncode == 0
    server = start_in_process(tmp_path / "m")
    reply = server.client.post("/predict", json={"text": "one two three"})
    assert reply.json() == {"text": "one two three", "words": 3}


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    directory = tmp_path_factory.mktemp("scaffold") / "llm"
    assert init(directory, "--openai").returncode == 0
    with InProcessServer(directory) as server:
        yield server


def test_the_openai_scaffold_answers_the_openai_sdk(openai_server: InProcessServer) -> None:
    client = openai.OpenAI(
        base_url=openai_server.url("/environments/production/sync/v1"),
        api_key="unused",
        http_client=openai_server.sdk_client,
    )
    messages = [{"role": "user", "content": "hi there"}]
    chat = client.chat.completions.create(model="llm", messages=messages)
    assert chat.choices[0].message.content == "You said: hi there "
    stream = client.chat.completions.create(model="llm", messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "You said: hi there "
    completion = client.completions.create(model="llm", prompt="go", stream=True)
    assert "".join(c.choices[0].text for c in completion) == "You said: go "
    embedding = client.embeddings.create(model="llm", input=["a", "b"])
    assert len(embedding.data) == 2 and len(embedding.data[0].embedding) == 16
    assert client.responses.create(model="llm", input="tell me").output_text.startswith("You")


def test_the_openai_scaffold_answers_the_anthropic_sdk(openai_server: InProcessServer) -> None:
    client = anthropic.Anthropic(
        base_url=openai_server.url("/environments/production/sync"),
        api_key="unused",
        http_client=openai_server.sdk_client,
    )
    messages = [{"role": "user", "content": "hello"}]
    reply = client.messages.create(model="llm", max_tokens=20, messages=messages)
    assert reply.content[0].type == "text" and reply.content[0].text == "You said: hello "
    with client.messages.stream(model="llm", max_tokens=20, messages=messages) as stream:
        assert "".join(stream.text_stream) == "You said: hello "
