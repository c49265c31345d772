"""Exceptions to HTTP responses, in one place."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.exceptions import HTTPException

from kingpost.errors import RequestError

logger = logging.getLogger("kingpost.server")

GENERIC_500 = "Internal Server Error"


@dataclass(frozen=True)
class ErrorReply:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


def error_body(text: str, **extra: Any) -> bytes:
    return orjson.dumps({"error": text, **extra})


class ErrorMapper:
    """Turns any exception raised while serving into the reply the contract names.

    Model exceptions become a generic 500 (the trimmed traceback goes to the log);
    in dev mode the body also names the exception type, message and frames.
    """

    def __init__(self, model_dir: Path | None, dev: bool = False) -> None:
        self.model_dir = str(model_dir.resolve()) if model_dir else None
        self.dev = dev

    def reply(self, exc: BaseException) -> ErrorReply:
        if isinstance(exc, RequestError):
            return ErrorReply(exc.status_code, error_body(exc.message))
        if isinstance(exc, HTTPException):
            headers = tuple(
                (k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()
            )
            detail = exc.detail
            return ErrorReply(exc.status_code, orjson.dumps({"error": detail}), headers)
        frames = self.model_frames(exc)
        logger.error("model raised %s: %s\n%s", type(exc).__name__, exc, "".join(frames).rstrip())
        if self.dev:
            return ErrorReply(
                500,
                error_body(
                    f"{type(exc).__name__}: {exc}",
                    type=type(exc).__name__,
                    message=str(exc),
                    traceback=frames,
                ),
            )
        return ErrorReply(500, error_body(GENERIC_500))

    def model_frames(self, exc: BaseException) -> list[str]:
        """The traceback trimmed to the frames in the model's own files."""
        summary = traceback.extract_tb(exc.__traceback__)
        if self.model_dir:
            own = [f for f in summary if f.filename.startswith(self.model_dir)]
            summary = traceback.StackSummary.from_list(own or summary[-3:])
        return summary.format()
