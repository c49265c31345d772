"""OpenAI embeddings: the request and the response (float or base64 vectors).

>>> embeddings([[0.1, 0.2]], model="minilm", prompt_tokens=3).data[0].embedding
[0.1, 0.2]
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError

from kingpost.protocols.openai_common import WireModel

# Strict, so that neither booleans nor numeric strings pass for token ids.
TokenIds = list[StrictInt]
INPUT_SHAPES = "a string, an array of strings, an array of token ids or an array of token arrays"


class EmbeddingRequest(WireModel):
    """The body of ``POST /v1/embeddings``.

    Nothing empty is embedded: an empty string, array or token array is refused,
    naming ``input``.
    """

    model: str = ""
    input: str | list[str] | TokenIds | list[TokenIds]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("model", "encoding_format", mode="before")
    @classmethod
    def _null_is_the_default(cls, value: Any, info: ValidationInfo) -> Any:
        # clients that send every field write null for the ones they leave unset
        if value is None and info.field_name is not None:
            return cls.model_fields[info.field_name].default
        return value

    @field_validator("input", mode="wrap")
    @classmethod
    def _one_shape_nothing_empty(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # one message for the whole union, rather than pydantic's guess at a member
        try:
            parsed = handler(value)
        except ValidationError:
            raise PydanticCustomError("input_shape", f"must be {INPUT_SHAPES}") from None
        if not parsed:
            raise PydanticCustomError("input_empty", "must not be empty")
        if isinstance(parsed, list):
            for index, item in enumerate(parsed):
                if isinstance(item, str | list) and not item:
                    raise PydanticCustomError("input_empty", f"item {index} is empty")
        return parsed

    def inputs(self) -> list[str | list[int]]:
        """The inputs to embed: each a string or a list of token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(item, int) for item in self.input):
            return [list(self.input)]  # type: ignore[arg-type]
        return list(self.input)  # type: ignore[arg-type]


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


def embeddings(
    vectors: Sequence[Sequence[float]],
    *,
    model: str,
    prompt_tokens: int,
    encoding_format: Literal["float", "base64"] = "float",
) -> EmbeddingList:
    """An embeddings response, one item per vector in input order."""
    data = [
        Embedding(index=index, embedding=encode_vector(vector, encoding_format))
        for index, vector in enumerate(vectors)
    ]
    usage = EmbeddingUsage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens)
    return EmbeddingList(data=data, model=model, usage=usage)


def encode_vector(
    vector: Sequence[float], encoding_format: Literal["float", "base64"]
) -> list[float] | str:
    """A vector as floats, or as base64 of little-endian float32 (what the SDKs decode)."""
    if encoding_format == "float":
        return [float(value) for value in vector]
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")
