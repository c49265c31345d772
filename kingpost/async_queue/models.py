"""The wire shapes of async inference: request body, status object, webhook payload.

Field names, ranges and enum values are the hosted platform's, so client code
written for it works against Kingpost unchanged.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kingpost.errors import InvalidInputError

MIN_QUEUE_SECONDS = 10
MAX_QUEUE_SECONDS = 72 * 3600


class Status(enum.StrEnum):
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELED = "CANCELED"
    WEBHOOK_FAILED = "WEBHOOK_FAILED"


class WebhookStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    NO_WEBHOOK_PROVIDED = "NO_WEBHOOK_PROVIDED"


class ErrorCode(enum.StrEnum):
    MODEL_PREDICT_ERROR = "MODEL_PREDICT_ERROR"
    MODEL_PREDICT_TIMEOUT = "MODEL_PREDICT_TIMEOUT"
    MODEL_NOT_READY = "MODEL_NOT_READY"
    MODEL_INVALID_INPUT = "MODEL_INVALID_INPUT"
    MODEL_DOES_NOT_EXIST = "MODEL_DOES_NOT_EXIST"
    EXPIRED_IN_QUEUE = "EXPIRED_IN_QUEUE"
    WORKER_LOST = "WORKER_LOST"


TERMINAL = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.EXPIRED, Status.CANCELED, Status.WEBHOOK_FAILED}
)


class RetryConfig(BaseModel):
    """``inference_retry_config``: exponential back-off on 500/502/503/504."""

    model_config = ConfigDict(extra="ignore")

    max_attempts: int = Field(default=3, ge=1, le=10, strict=True)
    initial_delay_ms: int = Field(default=1000, ge=0, le=10_000, strict=True)
    max_delay_ms: int = Field(default=5000, ge=0, le=60_000, strict=True)


class AsyncPredictBody(BaseModel):
    """The body of ``POST /async_predict``. Unknown fields are ignored, as the platform does."""

    model_config = ConfigDict(extra="ignore")

    model_input: Any = Field(...)
    webhook_endpoint: str | None = None
    priority: int = Field(default=0, ge=0, le=2, strict=True)
    max_time_in_queue_seconds: int = Field(
        default=600, ge=MIN_QUEUE_SECONDS, le=MAX_QUEUE_SECONDS, strict=True
    )
    inference_retry_config: RetryConfig = Field(default_factory=RetryConfig)

    @field_validator("webhook_endpoint")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @classmethod
    def parse(cls, data: Any) -> AsyncPredictBody:
        """Validate a decoded body; InvalidInputError names every bad field."""
        if not isinstance(data, dict):
            raise InvalidInputError("the body must be a JSON object with a 'model_input' field")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInputError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"field '{field}': {error['msg']}")
    return "invalid async request: " + "; ".join(parts)


class ErrorEntry(BaseModel):
    code: str
    message: str


class AsyncRequestStatus(BaseModel):
    """``GET /async_request/{request_id}``."""

    request_id: str
    model_id: str
    deployment_id: str
    status: Status
    webhook_status: WebhookStatus
    created_at: str
    status_at: str
    errors: list[ErrorEntry]


class QueueStatus(BaseModel):
    """``GET .../async_queue_status``."""

    model_id: str
    deployment_id: str
    num_queued_requests: int
    num_in_progress_requests: int


def iso_time(epoch: float) -> str:
    """``2026-12-01T19:57:34.123456Z``: UTC, as the platform writes its times."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
