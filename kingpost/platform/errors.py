"""Errors at the platform edge, each with its HTTP status; bodies are ``{"error": "..."}``.

PlatformError
  InvalidRequestError      400  a bad name, setting or file
  NotFoundError            404  unknown model, environment, deployment; deactivated
  ConflictError            409  a promotion already under way; a name taken
  PayloadTooLargeError     413
  ReplicaFailedError       502  the replica crashed or broke the reply
  UnavailableError         503  not ready, parked too long, queue full (Retry-After)
  GatewayTimeoutError      504  no reply within the sync limit
"""

from __future__ import annotations

import orjson

from kingpost.errors import RequestError


class PlatformError(RequestError):
    status_code = 500

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def body(self) -> bytes:
        return orjson.dumps({"error": self.message})

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"application/json")]
        if self.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(self.retry_after))).encode()))
        return headers


class InvalidRequestError(PlatformError):
    status_code = 400


class NotFoundError(PlatformError):
    status_code = 404


class ConflictError(PlatformError):
    status_code = 409


class PayloadTooLargeError(PlatformError):
    status_code = 413


class ReplicaFailedError(PlatformError):
    status_code = 502


class UnavailableError(PlatformError):
    status_code = 503


class GatewayTimeoutError(PlatformError):
    status_code = 504
