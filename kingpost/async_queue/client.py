"""``kingpost async``: async inference from the command line, for people without a webhook.

    kingpost async submit -d '{"prompt": "hi"}' --priority 1      # prints the request id
    kingpost async submit -d '{"prompt": "hi"}' --wait            # ... and then the result
    kingpost async status REQUEST_ID
    kingpost async result REQUEST_ID [--wait]
    kingpost async cancel REQUEST_ID

``--url`` is the server (default http://127.0.0.1:8080), or a platform target
such as http://127.0.0.1:8080/environments/staging for ``submit``; a key, when
the server has keys, comes from ``--api-key`` or ``$KINGPOST_API_KEY``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from kingpost.client import key_headers

EXIT_OK = 0
EXIT_FAILED = 1
SETTLED = frozenset({"SUCCEEDED", "FAILED", "EXPIRED", "CANCELED", "WEBHOOK_FAILED"})


@dataclass
class AsyncCall:
    """One ``kingpost async`` command."""

    action: str  # submit | status | cancel | result
    url: str = "http://127.0.0.1:8080"
    request_id: str | None = None
    model_input: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    wait: bool = False
    timeout: float = 600.0
    api_key: str | None = None


def server_root(url: str) -> str:
    """``/async_request/...`` has no target: the scheme and host of ``url`` only."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def run_async(call: AsyncCall, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Make the call and print the outcome; returns the process exit code."""
    try:
        timeout = httpx.Timeout(30.0, connect=10.0)
        with httpx.Client(timeout=timeout, headers=key_headers(call.api_key)) as client:
            return _run(client, call, out, err)
    except httpx.HTTPError as exc:
        print(f"kingpost: cannot reach {call.url}: {exc}", file=err)
        return EXIT_FAILED
    except _Failed as exc:
        print(f"error {exc.status}: {exc.message}", file=err)
        return EXIT_FAILED


class _Failed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _checked(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise _Failed(response.status_code, str(message))
    return response.json()


def _print(value: Any, out: TextIO) -> None:
    out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _run(client: httpx.Client, call: AsyncCall, out: TextIO, err: TextIO) -> int:
    root = server_root(call.url)
    request_id = call.request_id
    if call.action == "submit":
        body = {"model_input": call.model_input, **call.options}
        target = call.url.rstrip("/") + "/async_predict"
        request_id = str(_checked(client.post(target, json=body))["request_id"])
        if not call.wait:
            out.write(request_id + "\n")
            return EXIT_OK
        err.write(f"request {request_id} queued; waiting\n")
    assert request_id is not None
    status_url = f"{root}/async_request/{request_id}"
    if call.action == "status":
        _print(_checked(client.get(status_url)), out)
        return EXIT_OK
    if call.action == "cancel":
        _print(_checked(client.delete(status_url)), out)
        return EXIT_OK
    if call.wait or call.action == "submit":
        status = _wait(client, status_url, call.timeout)
        if status["status"] not in ("SUCCEEDED", "WEBHOOK_FAILED"):
            _print(status, err)
            return EXIT_FAILED
    _print(_checked(client.get(status_url + "/result")), out)
    return EXIT_OK


def _wait(client: httpx.Client, status_url: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        status = _checked(client.get(status_url))
        if status["status"] in SETTLED:
            return dict(status)
        if time.monotonic() > deadline:
            raise _Failed(0, f"still {status['status']} after {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
