"""OpenAI embeddings: the request and the response (float or base64 vectors).

>>> embeddings([[0.1, 0.2]], model="minilm", prompt_tokens=3).data[0].embedding
[0.1, 0.2]
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from kingpost.protocols.openai_common import WireModel


class EmbeddingRequest(WireModel):
    """The body of ``POST /v1/embeddings``."""

    model: str = ""
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> EmbeddingRequest:
        if isinstance(self.input, list) and not self.input:
            raise ValueError("input must not be empty")
        if self.input == "":
            raise ValueError("input must not be an empty string")
        return self

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
