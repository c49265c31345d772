"""One HTTP/1.1 connection held to limits: uvicorn's httptools protocol, guarded.

What a client may make the server hold or wait for, checked where the bytes
arrive, before any of it reaches the app:

- the request head (request line and header fields) is capped in bytes and in
  fields (431 at once; the bytes are counted before the parser joins them, so
  a huge header costs nothing),
- a head must arrive within ``head_timeout`` of the connection opening or of
  its first byte (idle new connections and slowloris heads are cut: 408),
- a body must keep arriving: ``body_timeout`` without a byte while the app is
  waiting for more gets 408 (or a cut, once the response has begun),
- a client that stops reading a response is cut once the send buffer has stayed
  full for ``send_timeout`` (so it holds no slot, and no more memory),
- HTTP/1.1 without ``Host`` is a 400, and every error this layer answers is JSON.

Idle keep-alive connections are closed by uvicorn's ``timeout_keep_alive``.

    limits = ConnectionLimits(max_head_bytes=64 << 10, max_header_fields=100)
    uvicorn.Config(app, http=guarded_protocol(limits), ...)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

logger = logging.getLogger("kingpost.connection")

_HEAD_END = b"\r\n\r\n"
# uvicorn's handlers, called directly: cheaper than super() on every request.
_data_received = HttpToolsProtocol.data_received
_on_headers_complete = HttpToolsProtocol.on_headers_complete
_on_body = HttpToolsProtocol.on_body
_on_message_complete = HttpToolsProtocol.on_message_complete
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection limits; every one has a default that suits a model server."""

    max_head_bytes: int = 64 * 1024
    max_header_fields: int = 100
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    send_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.max_head_bytes < 1024:
            raise ValueError("max_head_bytes must be at least 1024")
        if self.max_header_fields < 8:
            raise ValueError("max_header_fields must be at least 8")
        for name in ("head_timeout", "body_timeout", "send_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be above 0 seconds")


def error_response(status: int, message: str) -> bytes:
    """A complete JSON error response that closes the connection."""
    body = orjson.dumps({"error": message})
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: ",
            str(len(body)).encode(),
            b"\r\nx-baseten-error-source: 04\r\nx-baseten-error-code: 700\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``ConnectionLimits``."""

    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes: int | None = 0  # None once a head is complete
        self._head_tail = b""
        self._refused = False
        self._in_body = False
        self._body_progress = False
        self._timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None

    # -- connection events -----------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.head_timeout, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        head_bytes = self._head_bytes
        if head_bytes is not None:
            if head_bytes + len(data) > self.limits.max_head_bytes and not self._head_fits(data):
                limit = self.limits.max_head_bytes
                self._refuse(431, f"the request head is larger than {limit} bytes")
                return
            self._head_bytes = head_bytes + len(data)
            self._head_tail = data[-3:]
        self._body_progress = True
        _data_received(self, data)
        if self._refused or self.transport.is_closing():
            return
        # Only a request that has to wait for more of itself costs a timer.
        if self._head_bytes is not None and self._head_bytes > 0 and self._timer is None:
            self._arm(self.limits.head_timeout, self._head_expired)
        elif self._in_body and self._timer is None:
            self._arm(self.limits.body_timeout, self._body_expired)

    def _head_fits(self, data: bytes) -> bool:
        """Whether ``data``, which takes the head past its cap, ends the head within it
        (the rest being body)."""
        assert self._head_bytes is not None
        room = self.limits.max_head_bytes - self._head_bytes
        window = self._head_tail + data[: room + len(_HEAD_END)]
        return _HEAD_END in window

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_expired)

    def resume_writing(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().resume_writing()

    # -- parser callbacks --------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_bytes = None
        self._head_tail = b""
        headers = self.headers  # uvicorn's list, names lowercased
        if len(headers) > self.limits.max_header_fields:
            limit = self.limits.max_header_fields
            self._refuse(431, f"the request has more than {limit} header fields")
            return
        for name, _ in headers:
            if name == b"host":
                break
        else:
            if self.parser.get_http_version() == "1.1":
                self._refuse(400, "an HTTP/1.1 request must have a Host header")
                return
        _on_headers_complete(self)
        self._in_body = not self.parser.should_upgrade()
        self._body_progress = False

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            _on_body(self, body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._in_body = False
        if self._timer is not None:
            self._disarm()
        self._head_bytes = 0  # what comes next is the head of the next request
        _on_message_complete(self)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "the request is not valid HTTP/1.1")

    # -- timers and refusals -------------------------------------------------------

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_expired(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self._head_bytes is None:
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing was asked: no reply owed
            return
        timeout = self.limits.head_timeout
        self._refuse(408, f"the request head did not arrive within {timeout:g} s")

    def _body_expired(self) -> None:
        self._timer = None
        if self.transport.is_closing() or not self._in_body:
            return
        cycle = self.cycle
        waiting = cycle is not None and cycle.waiting_for_100_continue
        if self.flow.read_paused or self._body_progress or waiting:
            # The app is not reading yet (its own pace), or bytes came: wait another period.
            self._body_progress = False
            self._arm(self.limits.body_timeout, self._body_expired)
            return
        self._in_body = False
        started = cycle is not None and cycle.response_started
        if cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        if started:
            self.transport.close()
        else:
            timeout = self.limits.body_timeout
            self._refuse(408, f"no request body data for {timeout:g} s")

    def _send_expired(self) -> None:
        self._send_timer = None
        if not self.transport.is_closing():
            timeout = self.limits.send_timeout
            logger.info("the client read nothing for %g s: closing its connection", timeout)
            sock = self.transport.get_extra_info("socket")
            if sock is not None:  # a reset: the kernel drops what it still holds for the client
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            self.transport.abort()

    def _refuse(self, status: int, message: str) -> None:
        self._refused = True
        self._disarm()
        if not self.transport.is_closing():
            logger.info("refused a request: %d %s", status, message)
            self.transport.write(error_response(status, message))
            self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpProtocol]:
    """The protocol class for uvicorn's ``http=`` with these limits."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})
