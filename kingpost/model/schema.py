"""The JSON schema of a model's predict pipeline, from its type annotations.

Served at ``GET /v1/models/model/schema`` as ``{input_schema, output_schema,
supports_streaming}``. The input type is the first hook's (preprocess if there
is one, else predict); the output type is the last hook's (postprocess if there
is one, else predict). Only pydantic models have a schema; a model whose
pipeline names none has no schema at all.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from kingpost.model.descriptor import ModelDescriptor

_STREAM_ORIGINS = (
    collections.abc.Generator,
    collections.abc.AsyncGenerator,
    collections.abc.Iterator,
    collections.abc.AsyncIterator,
    collections.abc.Iterable,
    collections.abc.AsyncIterable,
)


@dataclass(frozen=True)
class ModelSchema:
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    supports_streaming: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "supports_streaming": self.supports_streaming,
        }

    @classmethod
    def from_descriptor(cls, descriptor: ModelDescriptor) -> ModelSchema | None:
        """The pipeline's schema, or None when it names no pydantic type."""
        predict = descriptor.hook("predict")
        if predict is None:
            return None
        first = descriptor.hook("preprocess") or predict
        last = descriptor.hook("postprocess") or predict
        input_model = pydantic_model(first.input_annotation)
        output_model = pydantic_model(last.return_annotation)
        if input_model is None and output_model is None:
            return None
        streaming = predict.kind.name.endswith("GENERATOR") or _names_stream(
            predict.return_annotation
        )
        return cls(
            input_schema=input_model.model_json_schema() if input_model else None,
            output_schema=output_model.model_json_schema() if output_model else None,
            supports_streaming=streaming,
        )


def _members(annotation: Any) -> tuple[Any, ...]:
    """The parts of a union (``A | B``, ``Optional[A]``), or the annotation itself."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    return (annotation,)


def pydantic_model(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if inspect.isclass(member) and issubclass(member, BaseModel):
            return member
    return None


def _names_stream(annotation: Any) -> bool:
    for member in _members(annotation):
        origin = typing.get_origin(member) or member
        if origin in _STREAM_ORIGINS:
            return True
        # Concrete iterators (not containers such as list or dict, which are iterable).
        if inspect.isclass(origin) and issubclass(origin, _STREAM_ORIGINS[:4]):
            return True
    return False
