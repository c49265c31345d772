"""Logging: every line of a request carries its request id.

Human-readable lines by default; JSON lines with ``--log-format json``.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

request_id_var: ContextVar[str] = ContextVar("kingpost_request_id", default="-")
# Set (and left set) by the server when it ends a response unfinished on purpose, so the
# client sees a failure; uvicorn, which runs the app in the same context, then says so too.
response_abandoned: ContextVar[bool] = ContextVar("kingpost_response_abandoned", default=False)

logger = logging.getLogger("kingpost")
access_logger = logging.getLogger("kingpost.access")

# Values of secrets read so far; no log line shows them (see ``redact``).
_secret_values: set[str] = set()
MIN_REDACTED_LENGTH = 4
REDACTED = "[secret]"

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def register_secret(value: str) -> None:
    """Keep ``value`` out of every log line from now on (and out of error bodies: ``redact``)."""
    if len(value) >= MIN_REDACTED_LENGTH:
        _secret_values.add(value)


def redact(text: str) -> str:
    """``text`` with each registered secret value replaced by ``[secret]``."""
    for value in _secret_values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def escape_text(text: str) -> str:
    """``text`` with control and other unprintable characters as ``\\xNN``/``\\uNNNN``.

    Paths arrive percent-decoded: ``%0a`` would start a forged log line and
    ``%1b`` send a terminal escape. Printable text (the usual case) is returned as is.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being served (or '-')."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = escape_text(request_id_var.get())
        if record.name.startswith("uvicorn") and isinstance(record.args, tuple):
            # uvicorn puts the client's path in its lines ("WebSocket /path" [accepted]).
            record.args = tuple(escape_text(a) if isinstance(a, str) else a for a in record.args)
        return True


class AbandonedResponseFilter(logging.Filter):
    """Drops uvicorn's line about a response the server ended unfinished and logged itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "uvicorn.error"
            and response_abandoned.get()
            and record.getMessage().startswith("ASGI callable returned without completing")
        )


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s [%(request_id)s] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any ``extra=`` fields of the record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(entry, default=str).decode())


class AccessLog:
    """Writes one access line per request, in the same format as every other line.

    Access lines are the one log line on the hot path, so they skip the logging
    machinery (a LogRecord, filters, a lock, a flush): the line is formatted here
    and written with one ``os.write``. Written only when the ``kingpost.access``
    logger is enabled for INFO; otherwise the call costs nothing.
    """

    def __init__(self, fmt: str = "text", fd: int | None = None) -> None:
        self.json = fmt == "json"
        self.fd = fd
        self.enabled = access_logger.isEnabledFor(logging.INFO)
        self._second = -1
        self._stamp = ""

    def write(
        self, method: str, path: str, status: int, seconds: float, route: str, request_id: str
    ) -> None:
        if not self.enabled:
            return
        path = escape_text(path)
        request_id = escape_text(request_id)
        now = time.time()
        second = int(now)
        if second != self._second:  # format the date part once a second
            self._second = second
            self._stamp = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                if self.json
                else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            )
        millis = int((now - second) * 1000)
        latency_ms = seconds * 1000
        message = f"{method} {path} {status} {latency_ms:.1f}ms"
        if self.json:
            line = orjson.dumps(
                {
                    "time": f"{self._stamp}.{millis:03d}Z",
                    "level": "INFO",
                    "logger": "kingpost.access",
                    "request_id": request_id,
                    "message": message,
                    "method": method,
                    "path": path,
                    "route": route,
                    "status": status,
                    "latency_ms": latency_ms,
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )
        else:
            text = f"{self._stamp},{millis:03d} INFO  [{request_id}] kingpost.access: {message}\n"
            line = text.encode()
        if self.fd is None:
            extra = {"route": route, "status": status, "latency_ms": latency_ms}
            access_logger.info(message, extra=extra)
        else:
            os.write(self.fd, line)


_access_log = AccessLog()


def access_log() -> AccessLog:
    """The process's access-line writer (set up by ``configure_logging``)."""
    return _access_log


def use_access_log(log: AccessLog) -> AccessLog:
    """Make ``log`` the process's access-line writer; returns the one it replaces."""
    global _access_log
    previous, _access_log = _access_log, log
    return previous


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send kingpost's and uvicorn's logs to stderr in one format.

    A fatal signal in native code (SIGSEGV, SIGILL, SIGBUS, SIGFPE, SIGABRT) is never
    silent: faulthandler writes a line naming it and every thread's Python stack to the
    same stream, then the process dies of that signal (a non-zero exit).
    """
    faulthandler.enable(file=sys.stderr, all_threads=True)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(AbandonedResponseFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    try:
        fd: int | None = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced by an object without one
        fd = None
    use_access_log(AccessLog(fmt, fd))
