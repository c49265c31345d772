"""Wire types shared by the OpenAI APIs: usage, logprobs, function tools, output formats."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class WireModel(BaseModel):
    """Base of request types: unknown fields are kept (clients send vendor extensions)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    """Token counts of one chat completion or completion."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    """Prompt tokens read from the engine's prefix cache, when there were any."""

    @model_serializer(mode="wrap")
    def _details_only_when_known(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("prompt_tokens_details") is None:
            data.pop("prompt_tokens_details", None)
        return data

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens)
            if cached_tokens
            else None,
        )


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    """The log probability of one sampled token and of its most likely alternatives."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class StreamOptions(WireModel):
    include_usage: bool = False


class FunctionDefinition(WireModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class JsonSchemaFormat(WireModel):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(WireModel):
    """``response_format`` of chat completions: free text, any JSON object, or a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given_for_json_schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("json_schema is required when type is 'json_schema'")
        return self

    def schema_or_none(self) -> dict[str, Any] | None:
        """The schema output must follow: any object for json_object, None for free text."""
        if self.type == "json_schema" and self.json_schema is not None:
            return self.json_schema.schema_ or {"type": "object"}
        if self.type == "json_object":
            return {"type": "object"}
        return None


def stop_list(stop: str | list[str] | None) -> list[str]:
    """Normalise the ``stop`` parameter (a string, a list, or absent) to a list."""
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if s]
