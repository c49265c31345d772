"""Every status, error code and webhook field, through a real server and a real receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime

import httpx
import pytest
from standardwebhooks import Webhook

from kingpost.testing import ServerProcess
from tests.async_queue.conftest import SECRETS, WebhookReceiver, write_model
from tests.async_queue.helpers import submit, wait_settled, wait_status

STATUS_FIELDS = {
    "request_id",
    "model_id",
    "deployment_id",
    "status",
    "webhook_status",
    "created_at",
    "status_at",
    "errors",
}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, async_server: Callable[..., ServerProcess]
) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("async")
    model = write_model(
        tmp_path / "model",
        runtime={"request_timeout": 1},
        database_url=f"sqlite:///{tmp_path / 'queue.db'}",
        model_id="abc123",
        deployment_id="dep1",
        max_body_bytes=4096,
        poll_interval_seconds=0.1,
        webhook_initial_delay_ms=50,
        webhook_max_delay_ms=100,
        webhook_max_attempts=3,
    )
    yield async_server(model)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def fastest(**retry: int) -> dict[str, int]:
    return {"initial_delay_ms": 20, "max_delay_ms": 50, **retry}


def test_a_succeeded_request_is_delivered_signed_both_ways_and_kept(
    server: ServerProcess, client: httpx.Client, receiver: WebhookReceiver
) -> None:
    base = server.base_url
    request_id = submit(
        client,
        base,
        {"model_input": {"n": 7}, "webhook_endpoint": receiver.url + "/ok", "priority": 1},
        path="/environments/production/async_predict",
    )
    found = wait_settled(client, base, request_id)
    assert set(found) == STATUS_FIELDS
    assert (found["status"], found["webhook_status"]) == ("SUCCEEDED", "SUCCEEDED")
    assert (found["model_id"], found["deployment_id"], found["errors"]) == ("abc123", "dep1", [])
    created = datetime.fromisoformat(found["created_at"])
    assert created <= datetime.fromisoformat(found["status_at"])

    (delivery,) = receiver.received(request_id)
    assert delivery.headers["webhook-id"] == f"msg_{request_id}"
    assert delivery.headers["content-type"] == "application/json"
    # Standard Webhooks, verified by its own library, with the current and the older secret.
    assert Webhook(SECRETS[0]).verify(delivery.body, delivery.headers) == delivery.payload
    assert Webhook(SECRETS[1].encode()).verify(delivery.body, delivery.headers)
    # The platform's header: one v1= hex HMAC-SHA256 of the body per secret.
    entries = delivery.headers["x-baseten-signature"].split(",")
    assert entries == [
        "v1=" + hmac.new(s.encode(), delivery.body, hashlib.sha256).hexdigest() for s in SECRETS
    ]
    payload = delivery.payload
    assert next(iter(payload)) == "request_id"
    assert payload["request_id"] == request_id
    assert payload["type"] == "async_request_completed"
    assert (payload["model_id"], payload["deployment_id"]) == ("abc123", "dep1")
    assert payload["status"] == "SUCCEEDED"
    assert payload["data"]["n"] == 7
    assert payload["errors"] == []
    datetime.fromisoformat(payload["time"])

    result = client.get(f"{base}/async_request/{request_id}/result")
    assert result.status_code == 200
    assert result.json() == payload["data"]


def test_a_request_without_a_webhook_keeps_its_output(
    server: ServerProcess, client: httpx.Client
) -> None:
    request_id = submit(client, server.base_url, {"model_input": {"n": 1}})
    found = wait_settled(client, server.base_url, request_id)
    assert (found["status"], found["webhook_status"]) == ("SUCCEEDED", "NO_WEBHOOK_PROVIDED")
    result = client.get(f"{server.base_url}/async_request/{request_id}/result")
    assert result.json()["n"] == 1


def test_failures_end_with_their_error_codes_after_retries(
    server: ServerProcess, client: httpx.Client, receiver: WebhookReceiver
) -> None:
    base, hook = server.base_url, receiver.url + "/ok"
    cases = {
        "MODEL_PREDICT_ERROR": {"mode": "fail"},
        "MODEL_INVALID_INPUT": {"mode": "bad"},
        "MODEL_PREDICT_TIMEOUT": {"mode": "sleep", "seconds": 1.5},
        "MODEL_NOT_READY": {"mode": "flaky", "key": "never", "fails": 10},
    }
    ids = {
        code: submit(
            client,
            base,
            {
                "model_input": model_input,
                "webhook_endpoint": hook,
                "inference_retry_config": fastest(max_attempts=2),
            },
        )
        for code, model_input in cases.items()
    }
    for code, request_id in ids.items():
        found = wait_settled(client, base, request_id)
        assert (found["status"], found["webhook_status"]) == ("FAILED", "SUCCEEDED"), found
        assert [e["code"] for e in found["errors"]] == [code]
        assert found["errors"][0]["message"]
        (delivery,) = receiver.received(request_id)
        assert delivery.payload["status"] == "FAILED"
        assert delivery.payload["data"] is None
        assert delivery.payload["errors"] == found["errors"]
        result = client.get(f"{base}/async_request/{request_id}/result")
        assert result.status_code == 409
        assert code in result.json()["error"]


def test_a_503_is_retried_with_back_off_until_it_succeeds(
    server: ServerProcess, client: httpx.Client
) -> None:
    request_id = submit(
        client,
        server.base_url,
        {
            "model_input": {"mode": "flaky", "key": "twice", "fails": 2},
            "inference_retry_config": {"max_attempts": 3, "initial_delay_ms": 200},
        },
    )
    found = wait_settled(client, server.base_url, request_id)
    assert found["status"] == "SUCCEEDED"
    took = datetime.fromisoformat(found["status_at"]) - datetime.fromisoformat(found["created_at"])
    assert took.total_seconds() >= 0.6  # 200 ms, then 400 ms
    result = client.get(f"{server.base_url}/async_request/{request_id}/result")
    assert result.json() == {"key": "twice", "calls": 3}


def test_a_webhook_that_keeps_failing_is_retried_then_webhook_failed_and_nothing_lost(
    server: ServerProcess, client: httpx.Client, receiver: WebhookReceiver
) -> None:
    base = server.base_url
    failing = submit(
        client, base, {"model_input": {"n": 2}, "webhook_endpoint": receiver.url + "/fail"}
    )
    refused = submit(
        client, base, {"model_input": {"n": 3}, "webhook_endpoint": receiver.url + "/reject"}
    )
    found = wait_settled(client, base, failing)
    assert (found["status"], found["webhook_status"]) == ("WEBHOOK_FAILED", "FAILED")
    deliveries = receiver.received(failing)
    assert len(deliveries) == 3  # webhook_max_attempts
    assert {d.headers["webhook-id"] for d in deliveries} == {f"msg_{failing}"}
    assert client.get(f"{base}/async_request/{failing}/result").json()["n"] == 2

    found = wait_settled(client, base, refused)
    assert found["status"] == "WEBHOOK_FAILED"
    assert len(receiver.received(refused)) == 1  # a 4xx is not retried


def test_the_webhook_is_pending_until_delivered(
    server: ServerProcess, client: httpx.Client, receiver: WebhookReceiver
) -> None:
    base = server.base_url
    request_id = submit(
        client, base, {"model_input": {"n": 6}, "webhook_endpoint": receiver.url + "/slow"}
    )
    found = wait_status(client, base, request_id, "SUCCEEDED")
    assert found["webhook_status"] == "PENDING"  # the receiver takes a second to answer
    assert client.get(f"{base}/async_request/{request_id}/result").json()["n"] == 6
    assert wait_settled(client, base, request_id)["webhook_status"] == "SUCCEEDED"


def test_a_webhook_answering_503_once_is_delivered_again_with_the_same_id(
    server: ServerProcess, client: httpx.Client, receiver: WebhookReceiver
) -> None:
    base = server.base_url
    request_id = submit(
        client, base, {"model_input": {"n": 4}, "webhook_endpoint": receiver.url + "/flaky"}
    )
    found = wait_settled(client, base, request_id)
    assert (found["status"], found["webhook_status"]) == ("SUCCEEDED", "SUCCEEDED")
    first, second = receiver.received(request_id)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body


def test_in_progress_and_queued_are_visible_and_only_queued_can_be_canceled(
    server: ServerProcess, client: httpx.Client
) -> None:
    base = server.base_url
    slow = [
        submit(client, base, {"model_input": {"mode": "sleep", "seconds": 0.8}}) for _ in range(2)
    ]
    waiting = submit(client, base, {"model_input": {"n": 5}, "priority": 2})
    for request_id in slow:
        wait_status(client, base, request_id, "IN_PROGRESS")
    queue = client.get(f"{base}/production/async_queue_status").json()
    assert queue == {
        "model_id": "abc123",
        "deployment_id": "dep1",
        "num_queued_requests": 1,
        "num_in_progress_requests": 2,
    }
    assert client.get(f"{base}/async_request/{waiting}").json()["status"] == "QUEUED"
    not_yet = client.get(f"{base}/async_request/{waiting}/result")
    assert not_yet.status_code == 409 and "QUEUED" in not_yet.json()["error"]

    canceled = client.delete(f"{base}/async_request/{waiting}")
    assert canceled.status_code == 200
    assert canceled.json() == {
        "request_id": waiting,
        "canceled": True,
        "message": "the request was canceled",
    }
    found = client.get(f"{base}/async_request/{waiting}").json()
    assert (found["status"], found["webhook_status"]) == ("CANCELED", "NO_WEBHOOK_PROVIDED")
    again = client.delete(f"{base}/async_request/{waiting}")
    assert again.status_code == 400 and "CANCELED" in again.json()["error"]
    running = client.delete(f"{base}/async_request/{slow[0]}")
    assert running.status_code == 400 and "IN_PROGRESS" in running.json()["error"]
    assert wait_settled(client, base, slow[0])["status"] == "SUCCEEDED"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"webhook_endpoint": "http://127.0.0.1:9/x"}, "model_input"),
        ({"model_input": 1, "priority": 3}, "priority"),
        ({"model_input": 1, "max_time_in_queue_seconds": 5}, "max_time_in_queue_seconds"),
        ({"model_input": 1, "inference_retry_config": {"max_attempts": 0}}, "max_attempts"),
        ({"model_input": 1, "webhook_endpoint": "http://169.254.169.254/"}, "webhook_endpoint"),
        ({"model_input": 1, "webhook_endpoint": "ftp://example.com/"}, "webhook_endpoint"),
    ],
)
def test_bad_bodies_get_400_naming_the_field(
    server: ServerProcess, client: httpx.Client, body: dict[str, object], field: str
) -> None:
    response = client.post(server.url("/async_predict"), json=body)
    assert response.status_code == 400
    assert field in response.json()["error"]


def test_bad_requests_get_clear_errors(server: ServerProcess, client: httpx.Client) -> None:
    base = server.base_url
    too_big = client.post(f"{base}/async_predict", json={"model_input": "x" * 5000})
    assert too_big.status_code == 413 and "max_body_bytes" in too_big.json()["error"]
    not_json = client.post(f"{base}/async_predict", content=b"{nope")
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]
    for method, path in [
        ("GET", "/async_request/unknown"),
        ("DELETE", "/async_request/unknown"),
        ("GET", "/async_request/unknown/result"),
    ]:
        response = client.request(method, base + path)
        assert response.status_code == 404 and "unknown" in response.json()["error"]
    assert client.get(f"{base}/async_predict").status_code == 405
    # The sync routes are untouched.
    assert client.post(f"{base}/predict", json={"n": 9}).json()["n"] == 9


def kingpost_async(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kingpost", "async", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_the_command_line_submits_waits_and_fetches(server: ServerProcess) -> None:
    base = server.base_url
    done = kingpost_async("submit", "--url", base, "-d", '{"n": 11}', "--priority", "2", "--wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n"] == 11

    queued = kingpost_async("submit", "--url", f"{base}/production", "-d", '{"n": 12}')
    assert queued.returncode == 0, queued.stderr
    request_id = queued.stdout.strip()
    result = kingpost_async("result", request_id, "--url", base, "--wait")
    assert result.returncode == 0 and json.loads(result.stdout)["n"] == 12
    status = kingpost_async("status", request_id, "--url", base)
    assert json.loads(status.stdout)["status"] == "SUCCEEDED"
    cancel = kingpost_async("cancel", request_id, "--url", base)
    assert cancel.returncode == 1 and "error 400" in cancel.stderr
    unknown = kingpost_async("status", "nope", "--url", base)
    assert unknown.returncode == 1 and "error 404" in unknown.stderr
