"""What a user's Model class offers, decided once at load time.

The signature rules live here and nowhere else: each hook takes one of
``()``, ``(inputs)``, ``(request)`` or ``(inputs, request)``, where ``request``
is recognised by its annotation (a subclass of ``starlette.requests.Request``).
"""

from __future__ import annotations

import enum
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from kingpost.errors import ModelDefinitionError

PIPELINE_HOOKS = ("preprocess", "predict", "postprocess")
ENDPOINT_HOOKS = (
    "chat_completions",
    "completions",
    "embeddings",
    "messages",
    "responses",
    "count_tokens",
    "input_tokens",
)
REQUEST_HOOKS = PIPELINE_HOOKS + ENDPOINT_HOOKS


class HookKind(enum.Enum):
    SYNC = "sync"
    ASYNC = "async"
    SYNC_GENERATOR = "sync generator"
    ASYNC_GENERATOR = "async generator"

    @property
    def is_async(self) -> bool:
        return self in (HookKind.ASYNC, HookKind.ASYNC_GENERATOR)


@dataclass(frozen=True)
class HookDescriptor:
    """One request hook: how to call it and what it yields."""

    name: str
    kind: HookKind
    takes_inputs: bool
    takes_request: bool
    input_annotation: Any = None
    return_annotation: Any = None

    @property
    def is_async(self) -> bool:
        return self.kind.is_async


@dataclass(frozen=True)
class ModelDescriptor:
    """Everything the server needs to know about a Model class."""

    cls: type
    hooks: dict[str, HookDescriptor] = field(default_factory=dict)
    has_load: bool = False
    has_is_healthy: bool = False
    has_websocket: bool = False
    has_setup_environment: bool = False

    def hook(self, name: str) -> HookDescriptor | None:
        return self.hooks.get(name)

    @property
    def takes_request_anywhere(self) -> bool:
        return any(h.takes_request for h in self.hooks.values())

    @property
    def endpoint_hooks(self) -> list[str]:
        return [name for name in ENDPOINT_HOOKS if name in self.hooks]

    @classmethod
    def from_class(cls, model_cls: type) -> ModelDescriptor:
        """Inspect ``model_cls``; ModelDefinitionError names the method and the rule."""
        hooks = {}
        for name in REQUEST_HOOKS:
            method = getattr(model_cls, name, None)
            if method is None:
                continue
            if not callable(method):
                raise ModelDefinitionError(f"{model_cls.__name__}.{name} must be a method")
            is_static = isinstance(inspect.getattr_static(model_cls, name), staticmethod)
            hooks[name] = describe_hook(model_cls.__name__, name, method, bound=not is_static)
        websocket = getattr(model_cls, "websocket", None)
        if websocket is not None and not inspect.iscoroutinefunction(websocket):
            raise ModelDefinitionError(
                f"{model_cls.__name__}.websocket must be 'async def websocket(self, ws)'"
            )
        if websocket is not None and "predict" in hooks:
            raise ModelDefinitionError(
                f"{model_cls.__name__} defines both websocket and predict; a model serves one"
            )
        return cls(
            cls=model_cls,
            hooks=hooks,
            has_load=callable(getattr(model_cls, "load", None)),
            has_is_healthy=callable(getattr(model_cls, "is_healthy", None)),
            has_websocket=websocket is not None,
            has_setup_environment=callable(getattr(model_cls, "setup_environment", None)),
        )


def describe_hook(class_name: str, name: str, method: Any, bound: bool = True) -> HookDescriptor:
    """Apply the signature rules to one hook as found on the class.

    ``bound`` says the first parameter is ``self`` (false for staticmethods).
    """
    where = f"{class_name}.{name}"
    signature = inspect.signature(method)
    params = list(signature.parameters.values())
    if bound:
        if not params or params[0].kind not in (
            params[0].POSITIONAL_ONLY,
            params[0].POSITIONAL_OR_KEYWORD,
        ):
            raise ModelDefinitionError(f"{where}: a method must take 'self' first")
        params = params[1:]
    hints = _type_hints(method)
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ModelDefinitionError(
                f"{where}: *args/**kwargs are not allowed; a hook takes (), (inputs), "
                "(request) or (inputs, request)"
            )
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            raise ModelDefinitionError(f"{where}: keyword-only argument '{p.name}' needs a default")
    params = [p for p in params if p.kind is not p.KEYWORD_ONLY]
    is_request = [_is_request_annotation(hints.get(p.name, p.annotation)) for p in params]

    if len(params) == 0:
        takes_inputs, takes_request = False, False
    elif len(params) == 1:
        takes_request = is_request[0]
        takes_inputs = not takes_request
    elif len(params) == 2:
        if is_request[0]:
            raise ModelDefinitionError(
                f"{where}: the request argument must come after the inputs: (inputs, request)"
            )
        if not is_request[1]:
            raise ModelDefinitionError(
                f"{where}: with two arguments the second must be annotated as a request "
                "(e.g. 'request: fastapi.Request'); it is recognised by annotation, not name"
            )
        takes_inputs, takes_request = True, True
    else:
        raise ModelDefinitionError(
            f"{where}: takes {len(params)} arguments; a hook takes (), (inputs), (request) "
            "or (inputs, request)"
        )

    input_annotation = hints.get(params[0].name) if takes_inputs else None
    return HookDescriptor(
        name=name,
        kind=_hook_kind(method),
        takes_inputs=takes_inputs,
        takes_request=takes_request,
        input_annotation=input_annotation,
        return_annotation=hints.get("return"),
    )


def _hook_kind(method: Any) -> HookKind:
    if inspect.isasyncgenfunction(method):
        return HookKind.ASYNC_GENERATOR
    if inspect.iscoroutinefunction(method):
        return HookKind.ASYNC
    if inspect.isgeneratorfunction(method):
        return HookKind.SYNC_GENERATOR
    return HookKind.SYNC


def _is_request_annotation(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, Request)


def _type_hints(method: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(method)
    except Exception:
        # Unresolvable string annotations: fall back to what the signature holds.
        return {
            name: p.annotation
            for name, p in inspect.signature(method).parameters.items()
            if p.annotation is not p.empty
        }
