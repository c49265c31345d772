"""Exceptions to HTTP error replies, in one place, in the dialect of the route.

Code anywhere raises (``kingpost.errors``); when a request fails before its
response began, the core asks :class:`ErrorTable` for the reply. The table
finds how to describe the exception by its class (the nearest entry in its
MRO, as Starlette's exception handlers are looked up), then the route's
:class:`ErrorDialect` renders that description:

    KINGPOST   {"error": "request body is not valid JSON: ..."}
    OPENAI     {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}
    ANTHROPIC  {"type": "error", "error": {"type": ..., "message": ...}}

Statuses the SDKs should retry (502, 503, 504) say so in ``x-should-retry``,
which the openai and anthropic clients read before their own status rules.
Every error reply also carries the hosted platform's error headers, as Truss's
server sends them: ``x-baseten-error-source: 04`` and ``x-baseten-error-code``,
700 for the client's mistake, 600 for a fault of the model (or of serving it),
500 for an exception that did not come from the model's code.
"""

from __future__ import annotations

import enum
import logging
import sysconfig
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from starlette.exceptions import HTTPException

from kingpost.errors import (
    InvalidParameterError,
    MethodNotAllowedError,
    RequestError,
    SchemaNotFoundError,
)
from kingpost.logs import redact
from kingpost.protocols.errors import anthropic_error_body, openai_error_body
from kingpost.server.replies import ErrorReply

logger = logging.getLogger("kingpost.server")

GENERIC_500 = "Internal Server Error"

Headers = tuple[tuple[bytes, bytes], ...]


class ErrorDialect(enum.Enum):
    """The error body shape a route answers in."""

    KINGPOST = "kingpost"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


@dataclass(frozen=True)
class Problem:
    """What went wrong, before it is put in a dialect."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    headers: Headers = ()
    details: dict[str, Any] = field(default_factory=dict)  # dev mode: type, traceback
    platform_code: int = 0  # x-baseten-error-code; 0: 700 below status 500, else 600


# Per status: OpenAI's error ``type`` and Anthropic's.
_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("authentication_error", "authentication_error"),
    403: ("permission_error", "permission_error"),
    404: ("not_found_error", "not_found_error"),
    405: ("invalid_request_error", "invalid_request_error"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_error"),
    499: ("client_disconnected", "client_disconnected"),
    502: ("server_error", "api_error"),
    503: ("service_unavailable", "overloaded_error"),
    504: ("timeout", "timeout_error"),
}
_RETRYABLE = frozenset({502, 503, 504})
# The hosted platform's error codes (x-baseten-error-code) and this server's id there.
UNEXPECTED_ERROR, MODEL_ERROR, CLIENT_ERROR = 500, 600, 700
_ERROR_SOURCE = (b"x-baseten-error-source", b"04")
_RETRY = ((b"x-should-retry", b"true"),)


def _types(status: int) -> tuple[str, str]:
    found = _TYPES.get(status)
    if found is not None:
        return found
    return ("server_error", "api_error") if status >= 500 else _TYPES[400]


def render(problem: Problem, dialect: ErrorDialect) -> ErrorReply:
    """``problem`` as the body and headers of ``dialect``."""
    if dialect is ErrorDialect.OPENAI:
        body = openai_error_body(
            problem.message,
            type=_types(problem.status)[0],
            param=problem.param,
            code=problem.code,
        )
    elif dialect is ErrorDialect.ANTHROPIC:
        body = anthropic_error_body(problem.message, type=_types(problem.status)[1])
    else:
        body = orjson.dumps({"error": problem.message, **problem.details})
    code = problem.platform_code or (CLIENT_ERROR if problem.status < 500 else MODEL_ERROR)
    headers = (*problem.headers, _ERROR_SOURCE, (b"x-baseten-error-code", b"%d" % code))
    if problem.status in _RETRYABLE:
        headers = headers + _RETRY
    return ErrorReply(problem.status, body, headers)


def error_body(text: str) -> bytes:
    """The Kingpost dialect's body for ``text``."""
    return orjson.dumps({"error": text})


Describe = Callable[["ErrorTable", Any], Problem]


def _request_error(table: ErrorTable, exc: RequestError) -> Problem:
    retry_after = getattr(exc, "retry_after", None)  # 429 and 503 past a limit say when
    if retry_after is not None:
        return Problem(exc.status_code, exc.message, headers=_retry_after(retry_after))
    return Problem(exc.status_code, exc.message)


def _retry_after(seconds: int) -> Headers:
    return ((b"retry-after", str(seconds).encode()),)


def _invalid_parameter(table: ErrorTable, exc: InvalidParameterError) -> Problem:
    return Problem(exc.status_code, exc.message, param=exc.param, code=exc.code)


def _schema_not_found(table: ErrorTable, exc: SchemaNotFoundError) -> Problem:
    return Problem(404, exc.message, platform_code=MODEL_ERROR)


def _method_not_allowed(table: ErrorTable, exc: MethodNotAllowedError) -> Problem:
    return Problem(405, exc.message, headers=((b"allow", exc.allow.encode()),))


def _http_exception(table: ErrorTable, exc: HTTPException) -> Problem:
    headers = tuple((k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items())
    detail = exc.detail
    if isinstance(detail, str):
        return Problem(exc.status_code, detail, headers=headers)
    # A structured detail is kept as the model wrote it (Kingpost dialect only).
    return Problem(
        exc.status_code, orjson.dumps(detail).decode(), headers=headers, platform_code=MODEL_ERROR
    )


def _timeout(table: ErrorTable, exc: TimeoutError) -> Problem:
    return Problem(504, str(exc) or "the request timed out", platform_code=MODEL_ERROR)


def _unexpected(table: ErrorTable, exc: BaseException) -> Problem:
    exc_info = user_exc_info(exc, table.model_dir)
    logger.error("model raised %s: %s", type(exc).__name__, exc, exc_info=exc_info)
    # Raised in the model's code (or an engine's): the model's fault; else the server's.
    code = UNEXPECTED_ERROR if _in(exc_info[2], _SERVING_DIRS) else MODEL_ERROR
    if not table.dev:
        return Problem(500, GENERIC_500, platform_code=code)
    # Even in dev mode a secret's value never reaches a client.
    message = redact(str(exc))
    frames = [redact(frame) for frame in table.model_frames(exc)]
    details = {"type": type(exc).__name__, "message": message, "traceback": frames}
    return Problem(500, f"{type(exc).__name__}: {message}", details=details, platform_code=code)


# Frames of the server and the standard library before the model's own, left out of logs.
_SERVING_DIRS = (str(Path(__file__).resolve().parent) + "/", sysconfig.get_paths()["stdlib"] + "/")


def _in(tb: TracebackType | None, dirs: tuple[str, ...]) -> bool:
    return tb is not None and tb.tb_frame.f_code.co_filename.startswith(dirs)


def user_exc_info(
    exc: BaseException, model_dir: str | None = None
) -> tuple[type[BaseException], BaseException, TracebackType | None]:
    """``exc`` for ``logger.error(..., exc_info=...)`` with its traceback trimmed to the
    user's frames: from the first in ``model_dir``, else from the first outside the server
    and the standard library (the whole traceback if none is)."""
    tb = exc.__traceback__
    start = tb
    if model_dir is not None:
        while start is not None and not _in(start, (model_dir,)):
            start = start.tb_next
    if start is None or model_dir is None:
        start = tb
        while start is not None and _in(start, _SERVING_DIRS):
            start = start.tb_next
    return type(exc), exc, start or tb


class ErrorTable:
    """Renders any exception raised while serving as the reply the contract names.

    Model exceptions become a generic 500 (the trimmed traceback goes to the log);
    in dev mode the body also names the exception type, message and frames.

        table = ErrorTable(model_dir, dev=False)
        reply = table.reply(exc, route.dialect)
    """

    describers: dict[type[BaseException], Describe] = {
        RequestError: _request_error,
        InvalidParameterError: _invalid_parameter,
        SchemaNotFoundError: _schema_not_found,
        MethodNotAllowedError: _method_not_allowed,
        HTTPException: _http_exception,
        TimeoutError: _timeout,
        BaseException: _unexpected,
    }

    def __init__(self, model_dir: Path | None = None, dev: bool = False) -> None:
        self.model_dir = str(model_dir.resolve()) if model_dir else None
        self.dev = dev

    def describe(self, exc: BaseException) -> Problem:
        for cls in type(exc).__mro__:
            describe = self.describers.get(cls)
            if describe is not None:
                return describe(self, exc)
        return _unexpected(self, exc)  # pragma: no cover - BaseException is in every MRO

    def reply(
        self, exc: BaseException, dialect: ErrorDialect = ErrorDialect.KINGPOST
    ) -> ErrorReply:
        problem = self.describe(exc)
        if isinstance(exc, HTTPException) and dialect is ErrorDialect.KINGPOST:
            # The Kingpost dialect keeps a structured detail as JSON, not as a string.
            body = orjson.dumps({"error": exc.detail})
            return ErrorReply(problem.status, body, render(problem, dialect).headers)
        return render(problem, dialect)

    def model_frames(self, exc: BaseException) -> list[str]:
        """The traceback trimmed to the frames in the model's own files."""
        summary = traceback.extract_tb(exc.__traceback__)
        if self.model_dir:
            own = [f for f in summary if f.filename.startswith(self.model_dir)]
            summary = traceback.StackSummary.from_list(own or summary[-3:])
        return summary.format()
