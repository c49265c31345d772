from __future__ import annotations

import pytest

from kingpost.server.errors import ErrorDialect
from kingpost.server.routing import Mount, Route, Router, WebSocketRoute, split_platform_path


@pytest.mark.parametrize(
    ("path", "environment", "local"),
    [
        ("/environments/production/predict", "production", "/predict"),
        ("/environments/staging/sync/v1/chat/completions", "staging", "/v1/chat/completions"),
        ("/production/predict", "production", "/predict"),
        ("/development/sync/v1/messages", "development", "/v1/messages"),
        ("/deployment/abc123/predict", None, "/predict"),
        ("/deployment/abc123/sync/v1/embeddings", None, "/v1/embeddings"),
        ("/environments/production/websocket", "production", "/v1/websocket"),
        ("/environments/production/sync/predict", "production", "/predict"),
        ("/production/async_predict", "production", "/async_predict"),
        ("/environments/staging/async_queue_status", "staging", "/async_queue_status"),
    ],
)
def test_platform_urls_reach_local_routes(path: str, environment: str | None, local: str) -> None:
    platform = split_platform_path(path)
    assert platform is not None
    assert (platform.environment, platform.path) == (environment, local)


@pytest.mark.parametrize("path", ["/predict", "/environments", "/environments/x/other"])
def test_other_paths_are_not_platform_paths(path: str) -> None:
    assert split_platform_path(path) is None


async def _no_op(ex: object) -> None:
    return None


def test_a_router_without_fallback_knows_only_its_routes() -> None:
    predict = Route("/predict", _no_op, ("POST",), name="predict")
    router = Router([predict])
    assert router.resolve("/environments/production/predict") is predict
    assert router.resolve("/v1/anything") is None


def test_a_fallback_answers_paths_no_route_matches() -> None:
    predict = Route("/predict", _no_op, ("POST",), name="predict")
    forward = Route("/", _no_op, ("GET",), name="forward")
    router = Router([predict], fallback=forward)
    assert router.resolve("/predict") is predict
    assert router.resolve("/v1/anything") is forward
    assert router.resolve("/environments/production/sync/v1/models") is forward


def test_a_trailing_slash_reaches_the_route_without_it() -> None:
    predict = Route("/predict", _no_op, ("POST",), name="predict")
    assert Router([predict]).resolve("/predict/") is predict


def test_a_route_declares_its_methods_and_error_dialect() -> None:
    route = Route("/v1/messages", _no_op, ("POST",), dialect=ErrorDialect.ANTHROPIC)
    assert route.methods == frozenset({"POST"})
    assert route.allow_header == b"POST"
    assert route.name == "v1/messages"
    assert route.dialect is ErrorDialect.ANTHROPIC


def test_websocket_routes_are_looked_up_apart_from_http_ones() -> None:
    socket = WebSocketRoute("/v1/websocket", _no_op)
    router = Router([socket])
    assert router.resolve_websocket("/environments/production/websocket") is socket
    assert router.resolve("/v1/websocket") is None


def test_a_mount_takes_every_path_under_its_prefix_before_the_fallback() -> None:
    mount = Mount("/admin", _no_op)  # type: ignore[arg-type]
    forward = Route("/", _no_op, name="forward")
    router = Router([mount], fallback=forward)
    assert router.resolve("/admin") is mount
    assert router.resolve("/admin/keys") is mount
    assert router.resolve("/administrator") is forward


@pytest.mark.parametrize(
    "path",
    [
        "/environments/production/sync/v1/responses/resp_1",
        "/production/sync/v1/responses/resp_1/input_items",
        "/development/sync/v1/responses/resp_1/cancel",
        "/deployment/abc123/sync/v1/responses/resp_1",
    ],
)
def test_a_mount_is_reached_through_the_platform_grammar(path: str) -> None:
    mount = Mount("/v1/responses", _no_op)  # type: ignore[arg-type]
    forward = Route("/", _no_op, name="forward")
    assert Router([mount], fallback=forward).resolve(path) is mount
    assert Router.local_path(path).startswith("/v1/responses/resp_1")


def test_any_model_name_reaches_the_model_routes_only_where_asked() -> None:
    predict = Route("/v1/models/model:predict", _no_op, ("POST",))
    named = Router([predict], any_model_name=True)
    assert named.resolve("/v1/models/x-4:predict") is predict
    assert named.resolve("/environments/production/sync/v1/models/x-4:predict") is predict
    assert named.resolve("/v1/models/x-4:explain") is None
    forward = Route("/", _no_op, name="forward")
    assert Router([predict], fallback=forward).resolve("/v1/models/x-4:predict") is forward


def test_a_prefix_route_takes_every_path_under_it_before_mounts() -> None:
    request = Route("/async_request", _no_op, ("GET", "DELETE"), prefix=True)
    mount = Mount("/async_request/x", _no_op)  # type: ignore[arg-type]
    router = Router([request, mount])
    assert router.resolve("/async_request/abc") is request
    assert router.resolve("/async_request/abc/result") is request
    assert router.resolve("/async_requests") is None


def test_a_route_without_prefix_answers_its_own_path_only() -> None:
    predict = Route("/predict", _no_op, ("POST",))
    assert Router([predict]).resolve("/predict/more") is None
