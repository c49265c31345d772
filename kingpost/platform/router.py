"""The invocation URL grammar: which model, which target, which endpoint.

Two forms reach the same thing. The host form is the hosted platform's, with
only the scheme, host and port changed::

    Host: model-{model}.<anything>     /production/predict
                                       /environments/{env}/sync/v1/chat/completions
                                       /development/websocket
                                       /deployment/{id}/wake

and the regional form puts the environment in the host
(``Host: model-{model}-{env}.<anything>`` with bare paths, ``/predict``). The
path form is for clients that cannot set a host::

    /models/{model}/environments/{env}/predict
    /models/{model}/production/sync/v1/messages

``{model}`` is the model's id or its name. ``/async_request/{id}`` (under
either form, or bare) names a queued request rather than a target.

    parse_invocation(b"model-echo.localhost", "/production/predict")
    # Invocation(model='echo', kind='environment', target='production',
    #            endpoint='predict', path='/predict')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENVIRONMENT = "environment"
DEVELOPMENT = "development"
DEPLOYMENT = "deployment"

# Endpoints the platform answers itself instead of a replica.
WAKE = "wake"
ASYNC_PREDICT = "async_predict"
ASYNC_QUEUE_STATUS = "async_queue_status"
PLATFORM_ENDPOINTS = frozenset({WAKE, ASYNC_PREDICT, ASYNC_QUEUE_STATUS})

_ASYNC_REQUEST = re.compile(r"^/async_request/(?P<id>[^/]+)(?:/result)?/?$")
_HOST = re.compile(rb"^model-(?P<label>[A-Za-z0-9_-]+)\.")


@dataclass(slots=True)  # not frozen: made for every request, and frozen init is slower
class Invocation:
    """A request for ``endpoint`` of a model's target (environment, development, deployment)."""

    model: str
    kind: str
    target: str  # the environment's name, the deployment's id, or "" for development
    endpoint: str  # predict, sync, websocket, wake, async_predict, async_queue_status
    path: str  # where the replica answers it ("" for the platform's own endpoints)


@dataclass(frozen=True, slots=True)
class AsyncRequestPath:
    """``/async_request/{id}``: the status (GET) or cancellation (DELETE) of a queued request."""

    model: str | None
    request_id: str


def host_model(host: bytes | None) -> str | None:
    """The ``{label}`` of a ``model-{label}.`` host, or None."""
    if not host or not host.startswith(b"model-"):
        return None
    match = _HOST.match(host)
    return match["label"].decode() if match else None


def parse_invocation(host: bytes | None, path: str) -> Invocation | AsyncRequestPath | None:
    """Split a request's host and path into what it invokes; None if it is not an invocation."""
    label = host_model(host)
    if label is not None:
        found = _parse_target(label, path)
        if found is not None:
            return found
        return _parse_regional(label, path)
    if path.startswith("/models/"):  # string slicing: this runs for every request
        end = path.find("/", 8)
        if end <= 8:
            return None
        return _parse_target(path[8:end], path[end:])
    match = _ASYNC_REQUEST.match(path)
    if match is not None:
        return AsyncRequestPath(None, match["id"])
    return None


def _named_part(path: str, prefix: str) -> tuple[str, str] | None:
    """``path`` = ``prefix`` + name + rest: (name, rest), or None."""
    end = path.find("/", len(prefix))
    name, rest = (path[len(prefix) :], "") if end < 0 else (path[len(prefix) : end], path[end:])
    return (name, rest) if name else None


def _parse_target(model: str, path: str) -> Invocation | AsyncRequestPath | None:
    target = ""
    if path.startswith("/production"):
        kind, rest = ENVIRONMENT, path[11:]
        target = "production"
    elif path.startswith("/environments/"):
        part = _named_part(path, "/environments/")
        if part is None:
            return None
        kind, (target, rest) = ENVIRONMENT, part
    elif path.startswith("/development"):
        kind, rest = DEVELOPMENT, path[12:]
    elif path.startswith("/deployment/"):
        part = _named_part(path, "/deployment/")
        if part is None:
            return None
        kind, (target, rest) = DEPLOYMENT, part
    else:
        request = _ASYNC_REQUEST.match(path)
        return AsyncRequestPath(model, request["id"]) if request else None
    if rest and rest[0] != "/":
        return None  # /productionx/...
    endpoint = _endpoint(rest or "/")
    if endpoint is None:
        return None
    return Invocation(model, kind, target, endpoint[0], endpoint[1])


def _parse_regional(label: str, path: str) -> Invocation | None:
    """``model-{model}-{env}.`` with a bare endpoint path."""
    model, dash, env = label.rpartition("-")
    endpoint = _endpoint(path)
    if not dash or not model or endpoint is None:
        return None
    return Invocation(model, ENVIRONMENT, env, endpoint[0], endpoint[1])


def _endpoint(rest: str) -> tuple[str, str] | None:
    """(endpoint, replica path) for the part of the URL after the target."""
    if rest == "/predict":
        return "predict", "/predict"
    if rest.startswith("/sync/"):
        return "sync", rest[5:]
    if rest in ("/sync", "/sync/"):
        return "sync", "/"
    if rest == "/websocket":
        return "websocket", "/v1/websocket"
    name = rest[1:]
    if name in PLATFORM_ENDPOINTS:
        return name, ""
    return None
