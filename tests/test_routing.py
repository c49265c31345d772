from __future__ import annotations

import pytest

from kingpost.server.routing import Route, Router, split_platform_path


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
    router = Router()
    router.add("/predict", "predict", ("POST",), _no_op)
    assert router.resolve("/environments/production/predict") is router.routes["/predict"]
    assert router.resolve("/v1/anything") is None


def test_a_fallback_answers_paths_no_route_matches() -> None:
    router = Router()
    router.add("/predict", "predict", ("POST",), _no_op)
    router.fallback = Route("forward", frozenset({"GET"}), _no_op)
    assert router.resolve("/predict") is router.routes["/predict"]
    assert router.resolve("/v1/anything") is router.fallback
    assert router.resolve("/environments/production/sync/v1/models") is router.fallback
