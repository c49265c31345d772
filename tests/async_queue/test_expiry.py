"""Work waits while the model loads; what waits too long expires, and says so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from kingpost.testing import ServerProcess
from tests.async_queue.conftest import WebhookReceiver, write_model
from tests.async_queue.helpers import submit, wait_settled


def test_requests_queue_while_loading_and_expire_past_their_time_in_queue(
    tmp_path: Path, async_server: Callable[..., ServerProcess], receiver: WebhookReceiver
) -> None:
    model = write_model(
        tmp_path / "model",
        database_url=f"sqlite:///{tmp_path / 'queue.db'}",
        poll_interval_seconds=0.1,
    )
    gate = tmp_path / "loaded"
    server = async_server(model, env={"ASYNC_TEST_LOAD_GATE": str(gate)}, wait_ready=False)
    base, hook = server.base_url, receiver.url + "/ok"
    with httpx.Client(timeout=10) as client:
        expiring = submit(
            client,
            base,
            {"model_input": {"n": 1}, "webhook_endpoint": hook, "max_time_in_queue_seconds": 10},
        )
        canceled = submit(client, base, {"model_input": {"n": 2}, "webhook_endpoint": hook})
        patient = submit(client, base, {"model_input": {"n": 3}, "webhook_endpoint": hook})
        assert client.get(f"{base}/async_queue_status").json()["num_queued_requests"] == 3
        assert client.delete(f"{base}/async_request/{canceled}").status_code == 200

        found = wait_settled(client, base, expiring, timeout=30)
        assert (found["status"], found["webhook_status"]) == ("EXPIRED", "SUCCEEDED")
        assert [e["code"] for e in found["errors"]] == ["EXPIRED_IN_QUEUE"]
        (delivery,) = receiver.received(expiring)
        assert delivery.payload["status"] == "EXPIRED"
        assert delivery.payload["errors"] == found["errors"]
        assert client.get(f"{base}/async_request/{patient}").json()["status"] == "QUEUED"

        gate.touch()  # the model finishes loading

        assert wait_settled(client, base, patient, timeout=30)["status"] == "SUCCEEDED"
        found = wait_settled(client, base, canceled)
        assert (found["status"], found["webhook_status"]) == ("CANCELED", "CANCELED")
        assert receiver.received(canceled) == []
