"""Delivering a finished request's result to its webhook: the payload, the URL guard, the POST.

The payload (JSON, signed by ``signing.WebhookSigner``):

    {"request_id": "...", "model_id": "...", "deployment_id": "...",
     "type": "async_request_completed", "time": "2026-...Z", "status": "SUCCEEDED",
     "data": <the model's output, or null>, "errors": [{"code": "...", "message": "..."}]}

Only http(s) URLs are accepted, and never ones that reach a link-local address
(where cloud metadata services answer) unless ``allow_link_local_webhooks``:
checked on the literal URL at submission and on every resolved address at
delivery. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import orjson

from kingpost.async_queue.models import iso_time
from kingpost.async_queue.signing import WebhookSigner
from kingpost.async_queue.store import WebhookJob
from kingpost.errors import InvalidInputError

EVENT_TYPE = "async_request_completed"
# Metadata services that are not link-local: AWS's IPv6 one, Alibaba's, Oracle's names.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})
RETRIED_STATUSES = frozenset({408, 425, 429})


class WebhookURLError(InvalidInputError):
    """A webhook_endpoint that is not allowed (its message names the field)."""


def forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address in _METADATA_ADDRESSES
    )


def check_webhook_url(url: str, allow_link_local: bool = False) -> str:
    """Refuse what can never be delivered, or must not be (at submission)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise WebhookURLError("field 'webhook_endpoint': only http and https URLs are accepted")
    host = parts.hostname
    if not host:
        raise WebhookURLError("field 'webhook_endpoint': the URL names no host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise WebhookURLError("field 'webhook_endpoint': the URL's port is not valid") from None
    if allow_link_local:
        return url
    if host.lower().rstrip(".") in _METADATA_HOSTS:
        raise WebhookURLError(f"field 'webhook_endpoint': {host} is a metadata service")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url  # a name: its addresses are checked when delivering
    if forbidden_address(address):
        raise WebhookURLError(
            f"field 'webhook_endpoint': {host} is a link-local or metadata address"
            " (allow it with async_queue.allow_link_local_webhooks)"
        )
    return url


async def check_resolved(url: str) -> None:
    """Refuse a webhook whose host resolves to a forbidden address (at delivery)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if forbidden_address(address):
            raise WebhookURLError(f"webhook host {host} resolves to {address}, which is refused")


def webhook_payload(job: WebhookJob) -> bytes:
    data = orjson.Fragment(job.output) if job.output is not None else None
    return orjson.dumps(
        {
            "request_id": job.id,
            "model_id": job.model_id,
            "deployment_id": job.deployment_id,
            "type": EVENT_TYPE,
            "time": iso_time(job.finished_at),
            "status": job.status.value,
            "data": data,
            "errors": job.errors,
        }
    )


def message_id(request_id: str) -> str:
    """``webhook-id``: the same on every delivery of one request, so receivers can de-duplicate."""
    return f"msg_{request_id}"


@dataclass(frozen=True)
class Delivery:
    """How one attempt went: ``retry`` says whether another attempt may succeed."""

    delivered: bool
    retry: bool
    detail: str


class WebhookSender:
    """POSTs signed payloads with one shared connection pool."""

    def __init__(
        self, signer: WebhookSigner, timeout: float = 10.0, allow_link_local: bool = False
    ) -> None:
        self.signer = signer
        self.allow_link_local = allow_link_local
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False
        )

    async def deliver(self, job: WebhookJob) -> Delivery:
        body = webhook_payload(job)
        headers = self.signer.headers(body, message_id(job.id))
        headers["content-type"] = "application/json"
        headers["user-agent"] = "kingpost-webhooks"
        try:
            if not self.allow_link_local:
                check_webhook_url(job.endpoint)
                await check_resolved(job.endpoint)
            response = await self.client.post(job.endpoint, content=body, headers=headers)
        except WebhookURLError as exc:
            return Delivery(False, False, str(exc))
        except (httpx.TransportError, OSError) as exc:  # timeouts, refused, DNS failures
            return Delivery(False, True, f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if 200 <= status < 300:
            return Delivery(True, False, f"HTTP {status}")
        return Delivery(False, status >= 500 or status in RETRIED_STATUSES, f"HTTP {status}")

    async def close(self) -> None:
        await self.client.aclose()
