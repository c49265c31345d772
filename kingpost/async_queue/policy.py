"""What a failed attempt means: its error code, and whether it is tried again."""

from __future__ import annotations

from dataclasses import dataclass

from kingpost.async_queue.models import ErrorCode

# The platform retries these statuses only (inference_retry_config).
RETRIED = frozenset({500, 502, 503, 504})
_CODES = {
    400: ErrorCode.MODEL_INVALID_INPUT,
    404: ErrorCode.MODEL_DOES_NOT_EXIST,
    413: ErrorCode.MODEL_INVALID_INPUT,
    415: ErrorCode.MODEL_INVALID_INPUT,
    422: ErrorCode.MODEL_INVALID_INPUT,
    503: ErrorCode.MODEL_NOT_READY,
    504: ErrorCode.MODEL_PREDICT_TIMEOUT,
}


@dataclass(frozen=True)
class AttemptError:
    code: ErrorCode
    message: str
    retryable: bool

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "message": self.message}


def classify(status: int, message: str) -> AttemptError:
    """The error an attempt that answered ``status`` records."""
    code = _CODES.get(status, ErrorCode.MODEL_PREDICT_ERROR)
    return AttemptError(code, message, status in RETRIED)


def backoff_seconds(failed_attempts: int, initial_delay_ms: int, max_delay_ms: int) -> float:
    """Exponential back-off: initial, 2x, 4x ... capped at max (``failed_attempts`` >= 1)."""
    delay = initial_delay_ms * 2 ** max(0, failed_attempts - 1)
    return min(delay, max_delay_ms) / 1000.0
