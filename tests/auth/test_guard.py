"""The key check in front of a server: 401/403/429 in the route's dialect, before the app."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from kingpost.auth import KeyGuard, KeySpec, MemoryKeyStore, classify_path, static_key
from kingpost.limits import Quota, Quotas
from kingpost.server.errors import ErrorDialect

KEY = "operator-key-0123456789"


class Recorder:
    """The app behind the guard: answers 200 and keeps the scopes it was given."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def client(guard: KeyGuard) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(guard), base_url="http://test")


@pytest.fixture
def store() -> MemoryKeyStore:
    return MemoryKeyStore([static_key(KEY)])


async def test_liveness_is_open_and_everything_else_needs_a_key(store: MemoryKeyStore) -> None:
    app = Recorder()
    async with client(KeyGuard(app, store)) as http:
        assert (await http.get("/")).status_code == 200
        for path in ("/predict", "/v1/models/model", "/metrics", "/docs", "/async_predict"):
            assert (await http.post(path)).status_code == 401, path
        assert (await http.post("/")).status_code == 401  # only GET / is liveness
    assert len(app.scopes) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/predict", {"error": "an API key is required"}),
        (
            "/v1/chat/completions",
            {
                "error": {
                    "message": "an API key is required",
                    "type": "authentication_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
        ),
        (
            "/environments/staging/sync/v1/messages",
            {
                "type": "error",
                "error": {"type": "authentication_error", "message": "an API key is required"},
            },
        ),
    ],
)
async def test_a_401_is_in_the_route_dialect_with_a_challenge(
    store: MemoryKeyStore, path: str, body: dict[str, Any]
) -> None:
    async with client(KeyGuard(Recorder(), store)) as http:
        reply = await http.post(path, json={})
    assert reply.status_code == 401 and reply.json() == body
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert reply.headers["x-baseten-error-code"] == "700"


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {KEY}"},
        {"authorization": f"API-KEY {KEY}"},
        {"x-api-key": KEY},
    ],
)
async def test_each_header_form_gets_in_and_the_key_does_not_reach_the_app(
    store: MemoryKeyStore, headers: dict[str, str]
) -> None:
    app = Recorder()
    async with client(KeyGuard(app, store)) as http:
        assert (await http.post("/predict", headers=headers)).status_code == 200
    (scope,) = app.scopes
    assert KEY.encode() not in b"".join(value for _, value in scope["headers"])
    assert scope["auth"].hash == static_key(KEY).hash


async def test_a_wrong_or_revoked_key_is_a_401_and_a_wrong_scope_a_403(
    store: MemoryKeyStore,
) -> None:
    revoked, record = store.create(KeySpec())
    store.revoke(record.id)
    asynchronous, _ = store.create(KeySpec(scopes=frozenset({"async"})))
    staging, _ = store.create(KeySpec(environments=frozenset({"staging"})))
    app = Recorder()
    async with client(KeyGuard(app, store, environment="production")) as http:
        wrong = await http.post("/predict", headers={"x-api-key": KEY + "x"})
        assert (wrong.status_code, wrong.json()["error"]) == (401, "the API key is not valid")
        gone = await http.post("/predict", headers={"x-api-key": revoked})
        assert (gone.status_code, gone.json()["error"]) == (401, "the API key has been revoked")
        scoped = await http.post("/v1/chat/completions", headers={"x-api-key": asynchronous})
        assert scoped.status_code == 403 and scoped.json()["error"]["type"] == "permission_error"
        assert "www-authenticate" not in scoped.headers
        assert (await http.post("/async_predict", headers={"x-api-key": asynchronous})).is_success
        assert (await http.post("/predict", headers={"x-api-key": staging})).status_code == 403
        on_staging = "/environments/staging/predict"
        assert (await http.post(on_staging, headers={"x-api-key": staging})).is_success
    assert len(app.scopes) == 2


async def test_metrics_need_an_admin_key_unless_opened(store: MemoryKeyStore) -> None:
    invoke, _ = store.create(KeySpec())
    async with client(KeyGuard(Recorder(), store)) as http:
        assert (await http.get("/metrics", headers={"x-api-key": invoke})).status_code == 403
        assert (await http.get("/metrics", headers={"x-api-key": KEY})).status_code == 200
    async with client(KeyGuard(Recorder(), store, opened={"metrics", "docs"})) as http:
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/docs")).status_code == 200
        assert (await http.get("/predict")).status_code == 401


async def test_past_its_quota_a_key_gets_429_with_retry_after(store: MemoryKeyStore) -> None:
    app = Recorder()
    guard = KeyGuard(app, store, quotas=Quotas(Quota(concurrency=1)))
    app.release.clear()
    headers = {"authorization": f"Bearer {KEY}"}
    async with client(guard) as http:
        first = asyncio.create_task(http.post("/v1/embeddings", headers=headers))
        for _ in range(200):
            if app.scopes:
                break
            await asyncio.sleep(0.01)
        refused = await http.post("/v1/embeddings", headers=headers)
        app.release.set()
        assert (await first).status_code == 200
        assert (await http.post("/v1/embeddings", headers=headers)).status_code == 200
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


def test_paths_map_to_their_dialect_and_scope() -> None:
    assert classify_path("/", "GET").scope is None
    assert classify_path("/v1/models", "GET").dialect is ErrorDialect.OPENAI
    assert classify_path("/v1/models/model", "GET").dialect is ErrorDialect.KINGPOST
    assert classify_path("/production/sync/v1/messages", "POST").dialect is ErrorDialect.ANTHROPIC
    assert classify_path("/environments/e/async_predict", "POST").scope == "async"
    assert classify_path("/async_request/abc", "GET").scope == "async"
    assert classify_path("/v1/models/model", "GET", {"readiness"}).scope is None
    assert classify_path("/environments/e/sync/", "GET").scope == "invoke"


async def test_keys_are_off_while_required_says_so(store: MemoryKeyStore) -> None:
    app, on = Recorder(), [False]
    async with client(KeyGuard(app, store, required=lambda: on[0])) as http:
        assert (await http.post("/predict")).status_code == 200
        on[0] = True
        assert (await http.post("/predict")).status_code == 401
    assert len(app.scopes) == 1


async def test_browser_groups_take_basic_and_ask_for_it(store: MemoryKeyStore) -> None:
    app = Recorder()
    guard = KeyGuard(app, store, browser_groups={"docs"})
    async with client(guard) as http:
        refused = await http.get("/docs")
        assert refused.status_code == 401
        assert refused.headers.get_list("www-authenticate")[-1].startswith("Basic ")
        assert (await http.get("/docs", auth=("", KEY))).status_code == 200
        assert (await http.post("/predict", auth=("", KEY))).status_code == 401  # not a page
        assert (await http.post("/docs", auth=("", KEY))).status_code == 403  # whose page?
        same = {"sec-fetch-site": "same-origin"}
        assert (await http.post("/docs", auth=("", KEY), headers=same)).status_code == 200
    assert all(b"authorization" not in dict(scope["headers"]) for scope in app.scopes)


@pytest.mark.parametrize(
    "path", ["/v1/responses/resp_1", "/environments/production/sync/v1/responses/resp_1/cancel"]
)
def test_a_mounted_route_under_the_platform_grammar_refuses_in_its_api_s_dialect(
    path: str,
) -> None:
    from kingpost.auth import route_dialects
    from kingpost.server.routing import Mount, Router

    router = Router([Mount("/v1/responses", _no_app)])  # type: ignore[arg-type]
    assert route_dialects(router)(path) is ErrorDialect.OPENAI


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    return None
