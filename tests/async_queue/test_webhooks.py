"""Which webhook URLs are refused, and the payload."""

from __future__ import annotations

import orjson
import pytest

from kingpost.async_queue.models import Status
from kingpost.async_queue.store import WebhookJob
from kingpost.async_queue.webhooks import (
    WebhookURLError,
    check_resolved,
    check_webhook_url,
    webhook_payload,
)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/x",
        "http://[::ffff:169.254.169.254]/x",
        "http://[fd00:ec2::254]/x",
        "http://metadata.google.internal/computeMetadata",
        "http://0.0.0.0/x",
    ],
)
def test_link_local_and_metadata_addresses_are_refused(url: str) -> None:
    with pytest.raises(WebhookURLError, match="webhook_endpoint"):
        check_webhook_url(url)
    assert check_webhook_url(url, allow_link_local=True) == url


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http:///x", "x"])
def test_only_http_urls_with_a_host_are_accepted(url: str) -> None:
    with pytest.raises(WebhookURLError, match="webhook_endpoint"):
        check_webhook_url(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/hook", "https://example.com/hook"])
def test_ordinary_urls_are_accepted(url: str) -> None:
    assert check_webhook_url(url) == url


async def test_a_name_resolving_to_a_link_local_address_is_refused_at_delivery() -> None:
    with pytest.raises(WebhookURLError):
        await check_resolved("http://169.254.169.254:80/x")
    await check_resolved("http://localhost:80/x")


def test_the_payload_starts_with_the_request_id_and_carries_the_output() -> None:
    job = WebhookJob(
        id="abc",
        owner="w",
        attempt=1,
        endpoint="http://127.0.0.1/x",
        model_id="m",
        deployment_id="d",
        status=Status.SUCCEEDED,
        errors=[],
        output=b'{"y":[1,2]}',
        finished_at=0.0,
    )
    body = webhook_payload(job)
    assert body.startswith(b'{"request_id":"abc"')
    assert orjson.loads(body) == {
        "request_id": "abc",
        "model_id": "m",
        "deployment_id": "d",
        "type": "async_request_completed",
        "time": "1970-01-01T00:00:00.000000Z",
        "status": "SUCCEEDED",
        "data": {"y": [1, 2]},
        "errors": [],
    }
