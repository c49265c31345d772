"""``kingpost predict``: call a running server from the command line.

    kingpost predict -d '{"text": "hi"}'
    kingpost predict --url http://127.0.0.1:8080/v1/chat/completions -f chat.json --stream

JSON replies are printed indented; streams are printed as their chunks arrive.
A server with keys is given one with ``--api-key`` or ``$KINGPOST_API_KEY``.
A failed call prints the server's error message and returns a non-zero code.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx
import orjson

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_FAILED = 1
KEY_VARIABLE = "KINGPOST_API_KEY"


def key_headers(api_key: str | None) -> dict[str, str]:
    """``Authorization: Bearer`` for ``api_key``, else ``$KINGPOST_API_KEY``, else nothing."""
    key = api_key or os.environ.get(KEY_VARIABLE)
    return {"authorization": f"Bearer {key}"} if key else {}


@dataclass
class PredictCall:
    url: str = DEFAULT_URL
    body: bytes = b"{}"
    stream: bool = False
    timeout: float = 1200.0
    api_key: str | None = None

    @property
    def target(self) -> str:
        """``url``, with ``/predict`` added when it names only a server."""
        parts = urlsplit(self.url)
        if parts.path in ("", "/"):
            return self.url.rstrip("/") + "/predict"
        return self.url


def read_body(data: str | None, file: str | None) -> bytes:
    """The request body from ``-d JSON`` or ``-f FILE`` (``-`` is stdin); checked as JSON."""
    if file is not None:
        raw = sys.stdin.buffer.read() if file == "-" else open(file, "rb").read()  # noqa: SIM115
    else:
        raw = (data if data is not None else "{}").encode()
    orjson.loads(raw)  # a clear local error beats a 400 from the server
    return raw


def run_predict(call: PredictCall, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Make the call and print the outcome; returns the process exit code."""
    headers = {"content-type": "application/json", **key_headers(call.api_key)}
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(call.timeout, connect=10.0)) as client,
            client.stream("POST", call.target, content=call.body, headers=headers) as response,
        ):
            if response.status_code >= 400:
                response.read()
                print(f"error {response.status_code}: {_error_message(response)}", file=err)
                return EXIT_FAILED
            if call.stream or _is_stream(response):
                for text in response.iter_text():
                    out.write(text)
                    out.flush()
                if not call.stream:
                    out.write("\n")
                return 0
            response.read()
            out.write(_pretty(response) + "\n")
            return 0
    except httpx.HTTPError as exc:
        print(f"error: could not call {call.target}: {exc}", file=err)
        return EXIT_FAILED


def _is_stream(response: httpx.Response) -> bool:
    content_type = response.headers.get("content-type", "")
    return content_type.startswith(("text/event-stream", "application/octet-stream"))


def _pretty(response: httpx.Response) -> str:
    try:
        value: Any = response.json()
    except ValueError:
        return response.text
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase
    if isinstance(body, dict) and "error" in body:
        error = body["error"]
        return error if isinstance(error, str) else orjson.dumps(error).decode()
    return orjson.dumps(body).decode()
