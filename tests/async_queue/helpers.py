"""Polling an async server over HTTP, with deadlines."""

from __future__ import annotations

import time
from typing import Any

import httpx

SETTLED = {"SUCCEEDED", "FAILED", "EXPIRED", "CANCELED", "WEBHOOK_FAILED"}


def submit(
    client: httpx.Client, base: str, body: dict[str, Any], path: str = "/async_predict"
) -> str:
    response = client.post(base + path, json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["request_id"])


def status(client: httpx.Client, base: str, request_id: str) -> dict[str, Any]:
    response = client.get(f"{base}/async_request/{request_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_settled(
    client: httpx.Client, base: str, request_id: str, timeout: float = 20.0
) -> dict[str, Any]:
    """Poll until the request has its final status and its webhook is no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        found = status(client, base, request_id)
        if found["status"] in SETTLED and found["webhook_status"] != "PENDING":
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"request {request_id} not settled after {timeout} s: {found}")
        time.sleep(0.02)


def wait_status(
    client: httpx.Client, base: str, request_id: str, wanted: str, timeout: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = status(client, base, request_id)
        if found["status"] == wanted:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"request {request_id} never {wanted}: {found}")
        time.sleep(0.01)
