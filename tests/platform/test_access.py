"""``kingpost up`` with keys: every route family refuses a missing, wrong, revoked or
out-of-scope key (over HTTP, websockets and both SDKs) before any replica sees it, and
the platform's own commands keep working with an admin key. One platform per module."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from kingpost.auth import KeySpec
from kingpost.platform.access import RouteRules, classify_platform
from kingpost.platform.keystore import PlatformKeyStore
from kingpost.platform.store import StateStore
from kingpost.scaffold import create_model_dir
from kingpost.server.errors import ErrorDialect
from tests.platform.conftest import MODELS, PlatformProcess, wait_for

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
ASYNC = {"model_input": {"prompt": "later"}}
MESSAGES = {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
# (method, path, extra headers, body, needed scope, error dialect)
ROUTES: list[tuple[str, str, dict[str, str], Any, str, str]] = [
    ("POST", "/models/keyed/production/predict", {}, {"prompt": "a"}, "invoke", "kingpost"),
    ("POST", "/production/predict", {"host": "model-keyed.local"}, {}, "invoke", "kingpost"),
    ("POST", "/predict", {"host": "model-keyed-production.local"}, {}, "invoke", "kingpost"),
    ("POST", "/models/keyed/production/sync/v1/chat/completions", {}, CHAT, "invoke", "openai"),
    ("POST", "/models/keyed/production/sync/v1/messages", {}, MESSAGES, "invoke", "anthropic"),
    ("GET", "/models/keyed/production/sync/v1/models", {}, None, "invoke", "openai"),
    ("POST", "/models/keyed/production/wake", {}, None, "invoke", "kingpost"),
    ("POST", "/models/keyed/production/async_predict", {}, ASYNC, "async", "kingpost"),
    ("GET", "/models/keyed/production/async_queue_status", {}, None, "async", "kingpost"),
    ("GET", "/async_request/abc", {}, None, "async", "kingpost"),
    ("GET", "/admin/v1/models", {}, None, "admin", "kingpost"),
    ("GET", "/admin/v1/keys", {}, None, "admin", "kingpost"),
    ("GET", "/metrics", {}, None, "admin", "kingpost"),
    ("GET", "/playground", {}, None, "admin", "kingpost"),
    ("GET", "/docs", {}, None, "admin", "kingpost"),
]


@dataclass
class Keys:
    admin: str
    invoke: str
    async_only: str
    revoked: str
    staging: str
    other_model: str
    slow: str  # one request every 5 s


def make_keys(home: Path) -> Keys:
    """Keys made in the state before ``kingpost up`` starts (``kingpost keys --home``)."""
    home.mkdir(parents=True)
    store = StateStore(f"sqlite:///{home / 'state.db'}")
    keys = PlatformKeyStore(store)

    def key(**spec: Any) -> str:
        return keys.create(KeySpec(**spec))[0]

    made = Keys(
        admin=key(name="admin", scopes=frozenset({"admin"})),
        invoke=key(name="invoke"),
        async_only=key(scopes=frozenset({"async"})),
        revoked=key(name="gone"),
        staging=key(environments=frozenset({"staging"})),
        other_model=key(models=frozenset({"other"})),
        slow=key(rate=0.2),
    )
    gone = [record for record in keys.list() if record.name == "gone"]
    keys.revoke(gone[0].id)
    store.close()
    return made


@pytest.fixture(scope="module")
def keys(module_dir: Path) -> Keys:
    return make_keys(module_dir / "home")


@pytest.fixture(scope="module")
def platform(module_dir: Path, keys: Keys) -> Iterator[PlatformProcess]:
    file = module_dir / "kingpost.yaml"
    # Applied by the platform through its own admin API, with a key of its own.
    file.write_text(
        "platform:\n  model_quotas:\n    socket: {concurrency: 1}\nmodels: {declared: {}}\n"
    )
    process = PlatformProcess(module_dir / "home", str(file), api_key=keys.admin)
    process.start()
    try:
        model_dir = module_dir / "keyed"
        create_model_dir(model_dir, openai=True)
        for name, directory in (("keyed", model_dir), ("socket", MODELS / "chat_socket")):
            record = process.admin.deploy(directory, name, environment="production")
            process.admin.wait_deployed(record["id"], "production", timeout=60)
        yield process
    finally:
        process.close()


def call(
    platform: PlatformProcess, route: tuple[str, str, dict[str, str], Any, str, str], **headers: str
) -> httpx.Response:
    method, path, extra, body, _, _ = route
    return httpx.request(
        method, platform.url(path), json=body, headers={**extra, **headers}, timeout=30
    )


def error_message(reply: httpx.Response, dialect: str) -> str:
    body = reply.json()
    if dialect == "openai":
        assert body["error"]["code"] in ("invalid_api_key", "permission_denied")
        return str(body["error"]["message"])
    if dialect == "anthropic":
        assert body["type"] == "error"
        return str(body["error"]["message"])
    return str(body["error"])


def model_requests(platform: PlatformProcess, keys: Keys) -> float:
    """Requests the platform handed to replicas of ``keyed`` (from its /metrics)."""
    text = httpx.get(platform.url("/metrics"), headers={"x-api-key": keys.admin}).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "kingpost_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("model_name") == "keyed"
    )


# -- the rule of each route (no process) ---------------------------------------------------


def scope_of(path: str, method: str = "GET", host: bytes = b"127.0.0.1") -> dict[str, Any]:
    return {"type": "http", "path": path, "method": method, "headers": [(b"host", host)]}


def test_each_platform_route_has_its_scope_model_environment_and_dialect(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        model = store.create_model("echo")
        snapshot = store.snapshot()
    finally:
        store.close()
    rule = lambda path, **kw: classify_platform(scope_of(path, **kw), snapshot)  # noqa: E731
    by_id = rule(f"/models/{model.id}/environments/staging/sync/v1/messages", method="POST")
    assert (by_id.scope, by_id.model, by_id.environment) == ("invoke", "echo", "staging")
    assert by_id.dialect is ErrorDialect.ANTHROPIC
    hosted = rule("/development/websocket", host=b"model-echo.example")
    assert (hosted.scope, hosted.model, hosted.environment) == ("invoke", "echo", "development")
    regional = rule("/sync/v1/embeddings", host=b"model-echo-production.example", method="POST")
    assert (regional.environment, regional.dialect) == ("production", ErrorDialect.OPENAI)
    deployment = rule("/models/echo/deployment/abc123/predict", method="POST")
    assert deployment.environment is None  # a key limited to environments cannot reach it
    assert rule("/models/echo/production/async_predict", method="POST").scope == "async"
    assert rule("/async_request/r1").scope == "async"
    for admin in ("/admin/v1/models", "/metrics", "/playground", "/docs", "/openapi.json"):
        assert rule(admin).scope == "admin", admin
    assert rule("/").scope is None and rule("/healthz").scope is None
    assert rule("/", method="POST").scope == "invoke"  # only GET / is liveness
    assert rule("/nothing/here").scope == "invoke"  # unknown paths are not open


def test_route_rules_are_remembered_until_the_snapshot_changes(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        current = [store.snapshot()]  # before the model exists
        created = store.create_model("named")
        rules = RouteRules(lambda: current[0])
        path = f"/models/{created.id}/production/predict"
        first = rules(scope_of(path))
        assert first.model == created.id  # unknown to that snapshot: kept as given
        assert rules(scope_of(path)) is first
        current[0] = store.snapshot()
        assert rules(scope_of(path)).model == "named"
        long = "/models/named/production/sync/" + "x" * RouteRules.MAX_PATH
        assert rules(scope_of(long)) is not rules(scope_of(long))  # long paths are not kept
    finally:
        store.close()


# -- no key, a wrong key, a revoked key: 401 in the route's dialect ----------------------


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_every_route_refuses_no_key_a_wrong_one_and_a_revoked_one(
    platform: PlatformProcess, keys: Keys, route: tuple[str, str, dict[str, str], Any, str, str]
) -> None:
    dialect = route[5]
    for headers in ({}, {"authorization": "Bearer kp_wrongwrong_xyz"}, {"x-api-key": keys.revoked}):
        reply = call(platform, route, **headers)
        assert reply.status_code == 401, (headers, reply.text)
        assert reply.headers["www-authenticate"].startswith("Bearer")
        error_message(reply, dialect)
    assert "revoked" in error_message(call(platform, route, **{"x-api-key": keys.revoked}), dialect)


def test_refusals_never_reach_a_replica(platform: PlatformProcess, keys: Keys) -> None:
    before = model_requests(platform, keys)
    for route in ROUTES[:6]:
        assert call(platform, route).status_code == 401
        assert call(platform, route, **{"x-api-key": keys.async_only}).status_code == 403
    assert model_requests(platform, keys) == before
    route = ROUTES[0]
    assert call(platform, route, **{"x-api-key": keys.invoke}).status_code == 200
    wait_for(lambda: model_requests(platform, keys) == before + 1, 5, "the request counted")


def test_liveness_stays_open(platform: PlatformProcess) -> None:
    assert httpx.get(platform.url("/")).json() == {"status": "ok"}


# -- the right key, in each header form ---------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        ("authorization", "Bearer {}"),
        ("authorization", "bearer {}"),
        ("authorization", "Api-Key {}"),
        ("authorization", "API-KEY {}"),
        ("x-api-key", "{}"),
    ],
)
def test_each_header_form_is_accepted(
    platform: PlatformProcess, keys: Keys, header: tuple[str, str]
) -> None:
    name, value = header
    for route in (ROUTES[0], ROUTES[3], ROUTES[4]):
        reply = call(platform, route, **{name: value.format(keys.invoke)})
        assert reply.status_code == 200, reply.text
    admin = call(platform, ROUTES[10], **{name: value.format(keys.admin)})
    assert admin.status_code == 200


def test_scopes_models_and_environments_are_enforced_with_403(
    platform: PlatformProcess, keys: Keys
) -> None:
    for route in ROUTES:
        needed, dialect = route[4], route[5]
        for scope, key in (("invoke", keys.invoke), ("async", keys.async_only)):
            reply = call(platform, route, **{"x-api-key": key})
            if scope == needed:
                assert reply.status_code != 403, (route, reply.text)
            else:
                assert reply.status_code == 403, (route, scope, reply.text)
                assert "scope" in error_message(reply, dialect)
    staging = call(platform, ROUTES[0], **{"x-api-key": keys.staging})
    assert staging.status_code == 403 and "production" in staging.json()["error"]
    other = call(platform, ROUTES[3], **{"x-api-key": keys.other_model})
    assert other.status_code == 403 and "keyed" in error_message(other, "openai")
    # The admin scope covers every route.
    assert call(platform, ROUTES[0], **{"x-api-key": keys.admin}).status_code == 200


# -- websockets ----------------------------------------------------------------------------


def test_a_websocket_needs_a_key_at_the_handshake(platform: PlatformProcess, keys: Keys) -> None:
    url = f"ws://127.0.0.1:{platform.port}/models/socket/production/websocket"
    for headers, status in (
        ({}, 401),
        ({"x-api-key": "kp_wrongwrong_xyz"}, 401),
        ({"x-api-key": keys.revoked}, 401),
        ({"x-api-key": keys.async_only}, 403),
        ({"x-api-key": keys.staging}, 403),
    ):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers, open_timeout=10).close()
        assert refused.value.response.status_code == status
    with connect(url, additional_headers={"authorization": f"Bearer {keys.invoke}"}) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "production: hi"
        # The model's quota is one websocket at once: a second one gets 429.
        with pytest.raises(InvalidStatus) as busy:
            connect(url, additional_headers={"x-api-key": keys.invoke}, open_timeout=10).close()
        assert busy.value.response.status_code == 429
        assert int(busy.value.response.headers["retry-after"]) >= 1
        ws.send("done")
    with open_socket(url, keys.invoke) as ws:
        ws.send("again")
        assert ws.recv(timeout=10) == "production: again"
        ws.send("done")


def open_socket(url: str, key: str) -> ClientConnection:
    """A websocket of ``socket``, once the model's one place is free again: the place of
    one that just closed is given back when the platform has relayed its close."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return connect(url, additional_headers={"x-api-key": key}, open_timeout=10)
        except InvalidStatus as exc:
            if exc.response.status_code != 429 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- the SDKs, with their own auth headers --------------------------------------------------


def test_the_openai_sdk_sends_its_key_as_bearer(platform: PlatformProcess, keys: Keys) -> None:
    base_url = platform.url("/models/keyed/production/sync/v1")
    sdk = openai.OpenAI(base_url=base_url, api_key=keys.invoke, max_retries=0)
    reply = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "k"}])
    assert reply.choices[0].message.content
    wrong = openai.OpenAI(base_url=base_url, api_key="kp_wrongwrong_xyz", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.chat.completions.create(model="m", messages=[{"role": "user", "content": "k"}])
    assert refused.value.code == "invalid_api_key"
    scoped = openai.OpenAI(base_url=base_url, api_key=keys.async_only, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        scoped.models.list()


def test_the_anthropic_sdk_sends_its_key_as_x_api_key(
    platform: PlatformProcess, keys: Keys
) -> None:
    base_url = platform.url("/models/keyed/production/sync")
    claude = anthropic.Anthropic(base_url=base_url, api_key=keys.invoke, max_retries=0)
    message = claude.messages.create(
        model="m", max_tokens=8, messages=[{"role": "user", "content": "k"}]
    )
    assert message.content
    wrong = anthropic.Anthropic(base_url=base_url, api_key=keys.revoked, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        wrong.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "k"}])
    assert "revoked" in str(refused.value)


# -- quotas --------------------------------------------------------------------------------


def test_a_key_past_its_rate_gets_429_with_retry_after_in_the_route_s_dialect(
    platform: PlatformProcess, keys: Keys
) -> None:
    route = ROUTES[3]  # OpenAI's chat completions
    assert call(platform, route, **{"x-api-key": keys.slow}).status_code == 200
    reply = call(platform, route, **{"x-api-key": keys.slow})
    assert reply.status_code == 429
    assert 1 <= int(reply.headers["retry-after"]) <= 5
    assert reply.json()["error"]["code"] == "rate_limit_exceeded"
    # Another key is not held back by it.
    assert call(platform, route, **{"x-api-key": keys.invoke}).status_code == 200


def test_a_model_past_its_concurrency_gets_429_for_http_too(
    platform: PlatformProcess, keys: Keys
) -> None:
    url = f"ws://127.0.0.1:{platform.port}/models/socket/production/websocket"
    with open_socket(url, keys.invoke) as ws:
        ws.send("hold")
        assert ws.recv(timeout=10) == "production: hold"
        route = ("POST", "/models/socket/production/sync/v1/chat/completions", {}, CHAT, "", "")
        reply = call(platform, route, **{"x-api-key": keys.invoke})
        assert reply.status_code == 429, reply.text
        assert reply.headers["retry-after"] == "1"
        assert "this model" in reply.json()["error"]["message"]
        ws.send("done")


# -- kingpost keys against the running platform ----------------------------------------------


def test_keys_made_and_revoked_by_the_cli_take_effect_on_the_running_platform(
    platform: PlatformProcess, keys: Keys
) -> None:
    made = platform.cli("keys", "create", "--name", "cli", "--model", "keyed")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("kp_") and "shown once" in made.stderr
    route = ROUTES[0]
    assert call(platform, route, **{"x-api-key": key}).status_code == 200
    listed = platform.cli("keys", "list")
    assert listed.returncode == 0 and key not in listed.stdout and '"cli"' in listed.stdout
    assert key.split("_")[2] not in (platform.home / "state.db").read_bytes().decode("latin-1")
    key_id = key.split("_")[1]
    revoked = platform.cli("keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert call(platform, route, **{"x-api-key": key}).status_code == 401  # at once
    unknown = platform.cli("keys", "revoke", "nosuchkey0")
    assert unknown.returncode == 2 and "no API key" in unknown.stderr


def test_a_revocation_written_to_the_state_by_another_process_is_seen_within_seconds(
    platform: PlatformProcess, keys: Keys
) -> None:
    made = platform.cli("keys", "create", "--name", "offline")
    key = made.stdout.strip()
    route = ROUTES[0]
    assert call(platform, route, **{"x-api-key": key}).status_code == 200
    command = ["keys", "--home", str(platform.home), "revoke", key.split("_")[1]]
    revoked = subprocess.run(
        [sys.executable, "-m", "kingpost", *command],
        capture_output=True,
        text=True,
        env=platform.env,
        timeout=60,
    )
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    wait_for(
        lambda: call(platform, route, **{"x-api-key": key}).status_code == 401,
        5,
        "the revocation",
        interval=0.1,
    )
    assert time.monotonic() - started < 3


def test_platform_commands_send_the_admin_key(platform: PlatformProcess, keys: Keys) -> None:
    models = platform.cli("models", "--json")
    assert models.returncode == 0, models.stderr
    assert "keyed" in models.stdout
    without = platform.cli("models", "--api-key", keys.invoke)
    assert without.returncode == 1 and "scope" in without.stderr


def test_kingpost_yaml_is_applied_with_keys_on(platform: PlatformProcess) -> None:
    names = lambda: {model["name"] for model in platform.admin.models()}  # noqa: E731
    wait_for(lambda: "declared" in names(), 20, "the file's model", interval=0.2)


def test_predict_and_async_commands_send_a_key(platform: PlatformProcess, keys: Keys) -> None:
    def kingpost(*args: str, key: str = "") -> subprocess.CompletedProcess[str]:
        env = {**platform.env, "KINGPOST_API_KEY": key}
        command = [sys.executable, "-m", "kingpost", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

    target = platform.url("/models/keyed/production")
    predicted = kingpost("predict", "--url", target + "/predict", "-d", "{}", key=keys.invoke)
    assert predicted.returncode == 0, predicted.stderr
    refused = kingpost("predict", "--url", target + "/predict", "-d", "{}", key=keys.async_only)
    assert refused.returncode == 1 and "error 403" in refused.stderr
    submitted = kingpost(
        "async", "submit", "--url", target, "-d", "{}", "--api-key", keys.async_only
    )
    assert submitted.returncode == 0, submitted.stderr
    status = kingpost("async", "status", submitted.stdout.strip(), "--url", platform.base_url)
    assert status.returncode == 1 and "401" in status.stderr


# -- the playground in a browser: HTTP Basic with the key as password -----------------------


def test_the_playground_asks_a_browser_for_the_key_and_takes_it_as_basic_password(
    platform: PlatformProcess, keys: Keys
) -> None:
    refused = httpx.get(platform.url("/playground"))
    assert refused.status_code == 401
    assert 'Basic realm="kingpost"' in refused.headers["www-authenticate"]
    assert "Basic" not in call(platform, ROUTES[0]).headers["www-authenticate"]  # not for models
    page = httpx.get(platform.url("/playground"), auth=("", keys.admin))
    assert page.status_code == 200 and "html" in page.headers["content-type"]
    assert httpx.get(platform.url("/admin/v1/models"), auth=("me", keys.admin)).status_code == 200
    assert httpx.get(platform.url("/playground"), auth=("", keys.invoke)).status_code == 403
    assert httpx.get(platform.url("/playground"), auth=("", "kp_wrongwrong_x")).status_code == 401
    # Basic is no key for a model's routes.
    assert call(platform, ROUTES[0], authorization=basic(keys.admin)).status_code == 401


def test_a_browser_s_key_changes_nothing_from_another_site(
    platform: PlatformProcess, keys: Keys
) -> None:
    url = platform.url("/admin/v1/models")
    for site in (None, "cross-site", "same-site"):
        headers = {"authorization": basic(keys.admin)}
        if site is not None:
            headers["sec-fetch-site"] = site
        reply = httpx.post(url, json={"name": "csrf"}, headers=headers)
        assert reply.status_code == 403, (site, reply.text)
    assert all(m["name"] != "csrf" for m in platform.admin.models())
    same = {"authorization": basic(keys.admin), "sec-fetch-site": "same-origin"}
    assert httpx.post(url, json={"name": "from-the-page"}, headers=same).status_code == 201


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"playground:{key}".encode()).decode()
