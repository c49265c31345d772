"""The invocation URL grammar: host form, regional form, path form."""

from __future__ import annotations

import pytest

from kingpost.platform.router import AsyncRequestPath, Invocation, parse_invocation


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        (
            b"model-abc123.api.example",
            "/production/predict",
            Invocation("abc123", "environment", "production", "predict", "/predict"),
        ),
        (
            b"model-echo.localhost:8080",
            "/environments/staging/sync/v1/chat/completions",
            Invocation("echo", "environment", "staging", "sync", "/v1/chat/completions"),
        ),
        (
            b"model-echo.x",
            "/development/websocket",
            Invocation("echo", "development", "", "websocket", "/v1/websocket"),
        ),
        (
            b"model-echo.x",
            "/deployment/d1/wake",
            Invocation("echo", "deployment", "d1", "wake", ""),
        ),
        (
            b"model-echo.x",
            "/production/async_predict",
            Invocation("echo", "environment", "production", "async_predict", ""),
        ),
        (
            b"model-echo-staging.x",
            "/predict",
            Invocation("echo", "environment", "staging", "predict", "/predict"),
        ),
        (
            b"127.0.0.1:8080",
            "/models/echo/environments/staging/predict",
            Invocation("echo", "environment", "staging", "predict", "/predict"),
        ),
        (
            None,
            "/models/echo/production/sync/v1/messages",
            Invocation("echo", "environment", "production", "sync", "/v1/messages"),
        ),
        (
            None,
            "/models/echo/production/sync",
            Invocation("echo", "environment", "production", "sync", "/"),
        ),
    ],
)
def test_invocations_parse_to_model_target_and_replica_path(
    host: bytes | None, path: str, expected: Invocation
) -> None:
    assert parse_invocation(host, path) == expected


def test_async_request_paths_name_the_request() -> None:
    assert parse_invocation(None, "/async_request/r1") == AsyncRequestPath(None, "r1")
    assert parse_invocation(b"model-echo.x", "/async_request/r1") == AsyncRequestPath("echo", "r1")
    assert parse_invocation(None, "/models/echo/async_request/r1") == AsyncRequestPath("echo", "r1")


@pytest.mark.parametrize(
    ("host", "path"),
    [
        (b"localhost", "/predict"),
        (b"localhost", "/admin/v1/models"),
        (None, "/models/echo/production/unknown"),
        (b"model-echo.x", "/staging/predict"),
        (b"model-echo.x", "/nope"),
        (b"modelecho.x", "/production/predict"),
        (b"model-echo.x", "/productionx/predict"),
        (None, "/models//production/predict"),
        (None, "/models/echo"),
        (None, "/models/echo/environments//predict"),
    ],
)
def test_other_paths_are_not_invocations(host: bytes | None, path: str) -> None:
    assert parse_invocation(host, path) is None
