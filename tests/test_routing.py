from __future__ import annotations

import pytest

from kingpost.server.routing import split_platform_path


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
