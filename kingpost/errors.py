"""Kingpost's exception hierarchy.

Every error the server can answer with is one of these classes; the server maps
them to HTTP statuses in one place (``kingpost.server.errors``).
"""

from __future__ import annotations


class KingpostError(Exception):
    """Base class of every error Kingpost raises on purpose."""


class ConfigError(KingpostError):
    """config.yaml (or an engine block in it) is invalid; the message names the field."""


class ModelDefinitionError(KingpostError):
    """The user's Model class breaks a rule (e.g. a hook with an unsupported signature)."""


class ModelLoadError(KingpostError):
    """Importing, constructing or loading the model failed."""


class SecretNotFoundError(KingpostError, KeyError):
    """A secret was read that is not declared or has no value."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else ""


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
    status_code = 400


class HookNotFoundError(RequestError):
    status_code = 404


class PayloadTooLargeError(RequestError):
    status_code = 413


class ClientDisconnectedError(RequestError):
    status_code = 499


class NotReadyError(RequestError):
    status_code = 503


class UpstreamUnavailableError(RequestError):
    """A custom server could not be reached (it is down or restarting)."""

    status_code = 502


class RequestTimeoutError(RequestError):
    status_code = 504
