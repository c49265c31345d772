"""Every exception Kingpost raises on purpose, in one tree.

    KingpostError
    ├── ConfigError                  config.yaml (or an engine block in it) is invalid
    ├── ModelDefinitionError         the Model class breaks a rule
    ├── ModelLoadError               importing, constructing or loading the model failed
    │   └── ModelFilesNotFoundError  model_cache / weights are not on disk
    ├── MissingRequirementsError     a declared requirement is not met by what is installed
    ├── InstallError                 the requirements could not be installed
    │   └── RequirementConflictError one conflicts with Kingpost's own dependencies
    ├── SecretNotFoundError          (also a KeyError) a secret is undeclared or empty
    ├── ScaffoldError                ``kingpost init`` cannot use the target directory
    ├── BatchSizeMismatchError       (also a RuntimeError) a batch function miscounted
    ├── UpstreamError                talking to a custom server failed (before any reply)
    │   └── UpstreamConnectError     it could not be reached at all
    └── RequestError                 answering one request; carries its HTTP status
        ├── InvalidInputError           400 the body is not what the route takes
        │   ├── InvalidParameterError   400 names the parameter (OpenAI ``param``)
        │   ├── InvalidRequestError     400 a bad name, setting or file (the platform)
        │   └── NotCancelableError      400 an async request past QUEUED
        ├── AuthenticationError         401 no API key, or a wrong, expired or revoked one
        ├── PermissionDeniedError       403 a key used outside its scope, model or environment
        ├── NotFoundError               404 an unknown model, environment or deployment;
        │   │                               a deactivated one (the platform)
        │   ├── AsyncRequestNotFoundError 404 no such async request (or it was purged)
        │   └── HookNotFoundError       404 the model lacks the hook a route calls
        │       ├── RouteNotFoundError  404 no route has this path
        │       └── SchemaNotFoundError 404 the model declares no input or output type
        ├── MethodNotAllowedError       405
        ├── ConflictError               409 a promotion already under way; a name taken
        │   └── ResultNotReadyError     409 an async request with no output (yet, or failed)
        ├── ResultGoneError             410 an async output that was not kept
        ├── PayloadTooLargeError        413 the body is over ``runtime.max_request_bytes``
        ├── TooManyRequestsError        429 a key past its rate or concurrency quota
        ├── ClientDisconnectedError     499 the client left before the reply
        ├── UpstreamUnavailableError    502 a custom server is down or restarting
        ├── ReplicaFailedError          502 a platform replica crashed or broke off its reply
        ├── NotReadyError               503 loading, unhealthy or shutting down
        │   ├── BatcherClosedError      503 a batcher was closed
        │   ├── OverloadedError         503 every slot busy and ``runtime.max_queue`` waiting
        │   └── UnavailableError        503 no platform replica in time, too many parked
        └── RequestTimeoutError         504 past ``runtime.request_timeout`` (a TimeoutError)
            ├── StreamReadTimeoutError  504 no chunk within ``streaming_read_timeout``
            └── GatewayTimeoutError     504 no reply from a platform replica within the limit

A ``retry_after`` (whole seconds) on an error becomes its ``Retry-After`` header.

Code anywhere raises the specific class; the server renders it once, in the
error dialect of the route that failed (``kingpost.server.errors``): raising

    raise InvalidParameterError("temperature", "must be at most 2")

on ``/v1/chat/completions`` answers OpenAI's error object with status 400.
"""

from __future__ import annotations

import math

__all__ = [
    "AsyncRequestNotFoundError",
    "AuthenticationError",
    "BatchSizeMismatchError",
    "BatcherClosedError",
    "ClientDisconnectedError",
    "ConfigError",
    "ConflictError",
    "GatewayTimeoutError",
    "HookNotFoundError",
    "InstallError",
    "InvalidInputError",
    "InvalidParameterError",
    "InvalidRequestError",
    "KingpostError",
    "MethodNotAllowedError",
    "MissingRequirementsError",
    "ModelDefinitionError",
    "ModelFilesNotFoundError",
    "ModelLoadError",
    "NotCancelableError",
    "NotFoundError",
    "NotReadyError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ReplicaFailedError",
    "RequestError",
    "RequestTimeoutError",
    "RequirementConflictError",
    "ResultGoneError",
    "ResultNotReadyError",
    "RouteNotFoundError",
    "ScaffoldError",
    "SchemaNotFoundError",
    "SecretNotFoundError",
    "StreamReadTimeoutError",
    "TooManyRequestsError",
    "UnavailableError",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamUnavailableError",
]


class KingpostError(Exception):
    """Base class of every error Kingpost raises on purpose."""


class ConfigError(KingpostError):
    """config.yaml (or an engine block in it) is invalid; the message names the field."""


class ModelDefinitionError(KingpostError):
    """The user's Model class breaks a rule (e.g. a hook with an unsupported signature)."""


class ModelLoadError(KingpostError):
    """Importing, constructing or loading the model failed."""


class ModelFilesNotFoundError(ModelLoadError):
    """Files the config names (``model_cache``, ``weights``) are absent and cannot be fetched."""


class MissingRequirementsError(KingpostError):
    """A declared requirement is not installed (the message names each one)."""


class InstallError(KingpostError):
    """The declared requirements could not be installed (the installer's output says why)."""


class RequirementConflictError(InstallError):
    """A declared requirement conflicts with one of Kingpost's own dependencies."""


class SecretNotFoundError(KingpostError, KeyError):
    """A secret was read that is not declared or has no value."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else ""


class ScaffoldError(KingpostError):
    """The target directory cannot be used for a new model."""


class BatchSizeMismatchError(KingpostError, RuntimeError):
    """The batch function returned a different number of results than it was given items."""


class UpstreamError(KingpostError):
    """A request to a custom server failed before any of its reply was relayed."""


class UpstreamConnectError(UpstreamError):
    """The custom server could not be connected to (it is not listening)."""


class RequestError(KingpostError):
    """An error answering one request, carrying the HTTP status it maps to."""

    status_code = 500

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidInputError(RequestError):
    """The request body is not what the route takes (HTTP 400)."""

    status_code = 400


class InvalidParameterError(InvalidInputError):
    """A request parameter is missing, malformed or unsupported (HTTP 400).

    ``param`` and ``code`` appear as such in OpenAI's error object.
    """

    def __init__(self, param: str | None, message: str, code: str | None = None) -> None:
        super().__init__(f"{param}: {message}" if param else message)
        self.param = param
        self.code = code


class AuthenticationError(RequestError):
    """No API key, an unknown one, or a revoked or expired one (HTTP 401)."""

    status_code = 401


class PermissionDeniedError(RequestError):
    """A valid API key used outside its scope, model or environment (HTTP 403)."""

    status_code = 403


class InvalidRequestError(InvalidInputError):
    """A bad name, setting or file given to the platform (HTTP 400)."""


class NotCancelableError(InvalidInputError):
    """An async request can be canceled only while it is QUEUED (HTTP 400)."""


class NotFoundError(RequestError):
    """What the request names does not exist, or no longer answers (HTTP 404)."""

    status_code = 404


class AsyncRequestNotFoundError(NotFoundError):
    """No async request has this id (or it was purged), HTTP 404."""


class HookNotFoundError(NotFoundError):
    """The model does not implement the hook the route calls (HTTP 404)."""

    status_code = 404


class RouteNotFoundError(HookNotFoundError):
    """No route has this path (HTTP 404)."""


class SchemaNotFoundError(HookNotFoundError):
    """The model declares no pydantic input or output type to describe (HTTP 404)."""


class MethodNotAllowedError(RequestError):
    """The route does not take this method (HTTP 405); ``allow`` lists those it takes."""

    status_code = 405

    def __init__(self, message: str, allow: str = "") -> None:
        super().__init__(message)
        self.allow = allow


class ConflictError(RequestError):
    """The change clashes with the state: a promotion under way, a name taken (HTTP 409)."""

    status_code = 409


class ResultNotReadyError(ConflictError):
    """The async request has no output (yet, or it failed): HTTP 409 with its status."""


class ResultGoneError(RequestError):
    """The async request succeeded, but its output was not kept (``keep_outputs: false``)."""

    status_code = 410


class PayloadTooLargeError(RequestError):
    status_code = 413


class TooManyRequestsError(RequestError):
    """A caller past its rate or concurrency quota (HTTP 429); retry after ``retry_after`` s."""

    status_code = 429

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class ClientDisconnectedError(RequestError):
    status_code = 499


class UpstreamUnavailableError(RequestError):
    """A custom server could not be reached (it is down or restarting)."""

    status_code = 502


class ReplicaFailedError(RequestError):
    """A platform replica crashed or broke off the reply it had begun (HTTP 502)."""

    status_code = 502


class NotReadyError(RequestError):
    """The server cannot take the request now: loading, unhealthy or shutting down."""

    status_code = 503


class BatcherClosedError(NotReadyError):
    """The batcher was closed; no new items are taken and waiting ones are failed."""


class OverloadedError(NotReadyError):
    """Every concurrency slot is busy and the queue for them is full (HTTP 503)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class UnavailableError(NotReadyError):
    """No platform replica in time, too many requests parked, a deployment that failed
    to start (HTTP 503); ``retry_after`` seconds, when given, become ``Retry-After``."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = None if retry_after is None else max(1, math.ceil(retry_after))


class RequestTimeoutError(RequestError, TimeoutError):
    status_code = 504


class StreamReadTimeoutError(RequestTimeoutError):
    """A stream produced no chunk within ``runtime.streaming_read_timeout``."""


class GatewayTimeoutError(RequestTimeoutError):
    """No reply from a platform replica began within the sync limit (HTTP 504)."""
