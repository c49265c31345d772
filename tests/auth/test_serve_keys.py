"""``kingpost serve --api-key``: no route but liveness answers without a key, over HTTP,
websockets and both SDKs; a revoked key, a wrong one and one outside its scope are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from kingpost.auth import FileKeyStore, KeySpec
from kingpost.scaffold import create_model_dir
from kingpost.testing import ServerProcess
from tests.conftest import MODELS

KEY = "kp-test-operator-key-0123456789"
# Every route family a caller can reach, with a body each accepts.
ROUTES = [
    ("POST", "/predict", {"prompt": "hi"}),
    ("POST", "/v1/models/model:predict", {"prompt": "hi"}),
    ("POST", "/environments/production/predict", {"prompt": "hi"}),
    ("POST", "/production/predict", {"prompt": "hi"}),
    ("POST", "/invocations", {"prompt": "hi"}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/completions", {"prompt": "hi"}),
    ("POST", "/v1/embeddings", {"input": "hi"}),
    ("POST", "/v1/responses", {"input": "hi"}),
    ("POST", "/v1/messages", {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/environments/production/sync/v1/chat/completions", {"messages": []}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/model", None),
    ("GET", "/v1/models/model/loaded", None),
    ("GET", "/v1/models/model/schema", None),
    ("GET", "/ping", None),
    ("GET", "/metrics", None),
]


class Keys:
    def __init__(self, path: Path) -> None:
        self.path = path
        store = FileKeyStore(path)
        self.invoke, _ = store.create(KeySpec(name="invoke"))
        self.revoked, record = store.create(KeySpec(name="gone"))
        store.revoke(record.id)
        self.async_only, _ = store.create(KeySpec(scopes=frozenset({"async"})))
        self.staging, _ = store.create(KeySpec(environments=frozenset({"staging"})))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("keys") / "keys.yaml")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[ServerProcess]:
    model_dir = tmp_path_factory.mktemp("keyed") / "model_dir"
    create_model_dir(model_dir, openai=True)
    process = ServerProcess(
        model_dir,
        "--api-key",
        KEY,
        "--keys-file",
        str(keys.path),
        "--environment",
        "production",
        headers={"x-api-key": KEY},
    )
    with process:
        yield process


@pytest.fixture(scope="module")
def ws_server(keys: Keys) -> Iterator[ServerProcess]:
    """A websocket model (one serves websockets or predict, not both) behind the same keys."""
    model_dir = MODELS / "truss_compat" / "websocket_echo"
    args = ("--api-key", KEY, "--keys-file", str(keys.path))
    with ServerProcess(model_dir, *args, headers={"x-api-key": KEY}) as process:
        yield process


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


def test_liveness_answers_without_a_key(http: httpx.Client) -> None:
    assert http.get("/").status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_needs_a_key(http: httpx.Client, method: str, path: str, body: object) -> None:
    reply = http.request(method, path, json=body)
    assert reply.status_code == 401, reply.text
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert reply.headers["content-type"] == "application/json"


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_answers_with_the_key(
    http: httpx.Client, method: str, path: str, body: object
) -> None:
    reply = http.request(method, path, json=body, headers={"authorization": f"Bearer {KEY}"})
    assert reply.status_code < 400 or (reply.status_code == 404 and "schema" in path), reply.text


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {KEY}"},
        {"authorization": f"Api-Key {KEY}"},
        {"authorization": f"API-KEY {KEY}"},
        {"x-api-key": KEY},
    ],
)
def test_each_header_form_is_accepted(http: httpx.Client, headers: dict[str, str]) -> None:
    assert http.post("/predict", json={"prompt": "x"}, headers=headers).status_code == 200


def test_wrong_revoked_and_out_of_scope_keys_are_refused(http: httpx.Client, keys: Keys) -> None:
    def status(key: str, path: str = "/predict") -> int:
        return http.post(path, json={"prompt": "x"}, headers={"x-api-key": key}).status_code

    assert status(keys.invoke) == 200
    assert status(KEY[:-1] + "X") == 401
    assert status(keys.revoked) == 401
    assert status(keys.async_only) == 403
    assert status(keys.staging) == 403
    assert status(keys.invoke, "/metrics") == 403  # metrics need an admin key


def test_the_openai_sdk_works_with_a_key_and_fails_without(
    server: ServerProcess, keys: Keys
) -> None:
    base = server.url("/environments/production/sync/v1")
    good = openai.OpenAI(base_url=base, api_key=keys.invoke, max_retries=0)
    reply = good.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert "hi" in (reply.choices[0].message.content or "")
    stream = good.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "hi" in "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    for key in ("wrong-key-0123456789", keys.revoked):
        bad = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as refused:
            bad.embeddings.create(model="m", input="hi")
        assert refused.value.code == "invalid_api_key"
    scoped = openai.OpenAI(base_url=base, api_key=keys.async_only, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        scoped.completions.create(model="m", prompt="hi")


def test_the_anthropic_sdk_works_with_a_key_and_fails_without(
    server: ServerProcess, keys: Keys
) -> None:
    base = server.url("/environments/production/sync")
    good = anthropic.Anthropic(base_url=base, api_key=keys.invoke, max_retries=0)
    message = good.messages.create(
        model="m", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content
    with good.messages.stream(
        model="m", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        assert "hi" in "".join(stream.text_stream)
    bad = anthropic.Anthropic(base_url=base, api_key=keys.revoked, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        bad.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    scoped = anthropic.Anthropic(base_url=base, api_key=keys.async_only, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):
        scoped.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("path", ["/v1/websocket", "/environments/production/websocket"])
def test_a_websocket_is_checked_at_the_handshake(
    ws_server: ServerProcess, keys: Keys, path: str
) -> None:
    url = f"ws://127.0.0.1:{ws_server.port}{path}"
    for headers, status in (
        (None, 401),
        ({"x-api-key": keys.revoked}, 401),
        ({"x-api-key": keys.async_only}, 403),
    ):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers, open_timeout=10)
        assert refused.value.response.status_code == status
    with connect(url, additional_headers={"authorization": f"Bearer {keys.invoke}"}) as ws:
        ws.send("you")
        assert ws.recv(timeout=10) == "echo: you"
