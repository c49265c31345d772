"""The async routes are the core's own: request ids, metrics, access log, 405s, prefixes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from kingpost.testing import ServerProcess
from tests.async_queue.conftest import write_model
from tests.async_queue.helpers import wait_settled


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, async_server: Callable[..., ServerProcess]
) -> Iterator[ServerProcess]:
    tmp_path: Path = tmp_path_factory.mktemp("async-app")
    model = write_model(
        tmp_path / "model",
        database_url=f"sqlite:///{tmp_path / 'queue.db'}",
        poll_interval_seconds=0.1,
    )
    yield async_server(model)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def test_a_submission_gets_the_cores_request_id(
    server: ServerProcess, client: httpx.Client
) -> None:
    response = client.post(
        server.base_url + "/async_predict",
        json={"model_input": {"n": 1}},
        headers={"x-request-id": "trace-me-1"},
    )
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "trace-me-1"


def test_async_routes_are_counted_in_the_cores_metrics(
    server: ServerProcess, client: httpx.Client
) -> None:
    base = server.base_url
    request_id = client.post(base + "/async_predict", json={"model_input": {"n": 2}}).json()[
        "request_id"
    ]
    wait_settled(client, base, request_id)
    client.get(f"{base}/async_request/{request_id}")
    client.get(f"{base}/production/async_queue_status")
    metrics = client.get(base + "/metrics").text
    assert 'kingpost_requests_total{route="async_predict",status="201"}' in metrics
    assert 'route="async_request",status="200"' in metrics
    assert 'route="async_queue_status",status="200"' in metrics


def test_async_routes_are_in_the_access_log(server: ServerProcess, client: httpx.Client) -> None:
    client.post(server.base_url + "/async_predict", json={"model_input": {"n": 3}})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if "POST /async_predict" in server.logs():
            return
        time.sleep(0.05)
    raise AssertionError("no access-log line for POST /async_predict:\n" + server.logs()[-2000:])


def test_a_wrong_method_is_the_cores_405_with_allow(
    server: ServerProcess, client: httpx.Client
) -> None:
    response = client.get(server.base_url + "/async_predict")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert "error" in response.json()


def test_a_result_cannot_be_deleted(server: ServerProcess, client: httpx.Client) -> None:
    response = client.delete(server.base_url + "/async_request/abc/result")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


def test_an_unknown_path_under_async_request_is_404(
    server: ServerProcess, client: httpx.Client
) -> None:
    response = client.get(server.base_url + "/async_request/abc/other")
    assert response.status_code == 404
    assert "error" in response.json()


def test_queue_status_answers_under_the_platform_prefixes(
    server: ServerProcess, client: httpx.Client
) -> None:
    for prefix in ("", "/production", "/environments/staging", "/deployment/local"):
        response = client.get(f"{server.base_url}{prefix}/async_queue_status")
        assert response.status_code == 200, prefix
        assert set(response.json()) >= {"num_queued_requests", "num_in_progress_requests"}


def test_metrics_carry_the_queue_gauges(server: ServerProcess, client: httpx.Client) -> None:
    metrics = client.get(server.base_url + "/metrics").text
    assert "kingpost_async_queue_requests{" in metrics
    assert 'status="QUEUED"' in metrics and 'priority="2"' in metrics
    assert "kingpost_async_queue_oldest_age_seconds{" in metrics
