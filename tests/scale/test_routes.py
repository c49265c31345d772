"""``kingpost serve DIR --ray --replicas 2``: the same routes, SDKs and URL grammar.

One local Ray cluster for the module, started by Kingpost (so pinned to 127.0.0.1).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import openai
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import EXAMPLES
from tests.scale.conftest import (
    REPLICA_HEADER,
    listeners,
    process_tree,
    ray_server,
    replica_pids,
    requires_ray,
)

pytestmark = requires_ray

PREFIXES = ["", "/environments/production/sync"]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ray_server(EXAMPLES / "openai-compatible", "--replicas", "2") as server:
        yield server


@pytest.fixture(params=PREFIXES, ids=["plain", "platform"])
def openai_client(request: pytest.FixtureRequest, server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url(request.param + "/v1"), api_key="unused")


@pytest.fixture(params=PREFIXES, ids=["plain", "platform"])
def anthropic_client(request: pytest.FixtureRequest, server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url(request.param), api_key="unused")


@pytest.mark.parametrize(
    "path",
    [
        "/predict",
        "/v1/models/model:predict",
        "/environments/production/predict",
        "/production/predict",
        "/deployment/abc123/predict",
        "/environments/staging/sync/predict",
    ],
)
def test_predict_on_every_url_form(server: ServerProcess, path: str) -> None:
    reply = httpx.post(server.url(path), json={"x": [1, 2]}, timeout=30)
    assert reply.status_code == 200
    assert reply.json() == {"echo": {"x": [1, 2]}}
    assert reply.headers["x-request-id"]


def test_both_replicas_answer(server: ServerProcess) -> None:
    assert len(replica_pids(server)) == 2

    def ask(i: int) -> str:
        reply = httpx.post(server.url("/predict"), json={"i": i}, timeout=30)
        assert reply.json() == {"echo": {"i": i}}
        return reply.headers[REPLICA_HEADER]

    seen: set[str] = set()
    deadline = time.monotonic() + 30
    with ThreadPoolExecutor(8) as pool:
        while len(seen) < 2 and time.monotonic() < deadline:
            seen |= set(pool.map(ask, range(32)))
    assert len(seen) == 2


def test_model_errors_keep_their_status(server: ServerProcess) -> None:
    reply = httpx.post(server.url("/predict"), content=b"{not json", timeout=30)
    assert reply.status_code == 400
    assert "error" in reply.json()
    assert httpx.get(server.url("/no/such/route"), timeout=30).status_code == 404


def test_chat_completion(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(
        model="parrot", messages=[{"role": "user", "content": "hi there"}]
    )
    assert reply.choices[0].message.content == "You said: hi there "


def test_chat_completion_stream(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model="parrot",
        messages=[{"role": "user", "content": "hi there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: hi there "
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_completion_and_its_stream(openai_client: openai.OpenAI) -> None:
    reply = openai_client.completions.create(model="parrot", prompt="say this")
    assert reply.choices[0].text == "You said: say this "
    stream = openai_client.completions.create(model="parrot", prompt="say this", stream=True)
    assert "".join(c.choices[0].text for c in stream) == "You said: say this "


def test_embeddings(openai_client: openai.OpenAI) -> None:
    reply = openai_client.embeddings.create(model="parrot", input=["a", "b"])
    assert [d.index for d in reply.data] == [0, 1]
    assert len(reply.data[0].embedding) == 8


def test_responses_and_their_stream(openai_client: openai.OpenAI) -> None:
    reply = openai_client.responses.create(model="parrot", input="tell me")
    assert reply.output_text == "You said: tell me "
    events = list(openai_client.responses.create(model="parrot", input="tell me", stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "You said: tell me "
    assert events[-1].type == "response.completed"


def test_messages_and_their_stream(anthropic_client: anthropic.Anthropic) -> None:
    reply = anthropic_client.messages.create(
        model="parrot", max_tokens=50, messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.content[0].type == "text" and reply.content[0].text == "You said: hello "
    with anthropic_client.messages.stream(
        model="parrot", max_tokens=50, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "You said: hello "
    assert final.stop_reason == "end_turn"


def test_models_lists_the_served_model(openai_client: openai.OpenAI) -> None:
    assert [m.id for m in openai_client.models.list()] == ["parrot"]


def test_ray_listens_on_loopback_only(server: ServerProcess) -> None:
    assert server.process is not None
    tree = process_tree(server.process.pid)
    assert any("gcs_server" in command for command in tree.values())
    assert any("raylet" in command for command in tree.values())
    found = listeners(tree)
    assert len(found) >= 5  # the front, GCS, raylet, the controller, the replicas
    outside = [f for f in found if f.address not in ("127.0.0.1", "::1")]
    assert outside == [], outside


def test_sigterm_stops_ray_and_every_process_it_started(server: ServerProcess) -> None:
    assert server.process is not None
    tree = process_tree(server.process.pid)
    assert len(tree) > 5
    assert server.stop(grace=60) == 0
    deadline = time.monotonic() + 30
    alive = set(tree)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _running(pid)}
        time.sleep(0.2)
    assert alive == set(), {pid: tree[pid] for pid in alive}


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
    finally:
        os.sched_yield()
