"""OpenAI chat completions: the request, the response, and a stream builder.

>>> chat_completion(text="Hello!", model="gemma").choices[0].message.content
'Hello!'

A streaming hook yields the chunks of a :class:`ChatCompletionStream`::

    async def chat_completions(self, inputs):
        stream = ChatCompletionStream(model="gemma")
        yield stream.role()
        yield stream.text("Hello")
        yield stream.finish("stop", usage=Usage.of(5, 1))
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_serializer, model_validator

from kingpost.protocols.ids import new_id
from kingpost.protocols.openai_common import (
    FinishReason,
    FunctionDefinition,
    ResponseFormat,
    StreamOptions,
    TokenLogprob,
    Usage,
    WireModel,
    stop_list,
)
from kingpost.protocols.sse import SSE_DONE, sse_event

# ---- request ----------------------------------------------------------------------


class ChatTool(WireModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class ToolChoiceFunction(WireModel):
    name: str


class NamedToolChoice(WireModel):
    type: Literal["function"] = "function"
    function: ToolChoiceFunction


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ContentPart(WireModel):
    type: str
    text: str | None = None

    @field_validator("type")
    @classmethod
    def _text_only(cls, value: str) -> str:
        if value not in ("text", "input_text"):
            raise ValueError(f"content parts of type {value!r} are not supported (text only)")
        return value


class ChatMessage(WireModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _tool_reply_names_its_call(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message with role 'tool' needs tool_call_id")
        return self

    def text(self) -> str:
        """The message content as one string (text parts joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)


class ChatCompletionRequest(WireModel):
    """The body of ``POST /v1/chat/completions``; ``top_k`` is accepted as an extension."""

    model: str = ""
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    tools: list[ChatTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        if isinstance(self.tool_choice, NamedToolChoice):
            name = self.tool_choice.function.name
            if name not in {tool.function.name for tool in self.tools or []}:
                raise ValueError(f"tool_choice names unknown tool {name!r}")
        if self.tool_choice == "required" and not self.tools:
            raise ValueError("tool_choice 'required' needs tools")
        return self

    @property
    def stop_sequences(self) -> list[str]:
        return stop_list(self.stop)

    @property
    def output_token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


# ---- response ---------------------------------------------------------------------


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatCompletionMessage
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=lambda: new_id("chatcmpl-"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


def chat_completion(
    text: str | None = None,
    *,
    model: str,
    tool_calls: list[ToolCall] | None = None,
    finish_reason: FinishReason | None = None,
    usage: Usage | None = None,
    logprobs: list[TokenLogprob] | None = None,
) -> ChatCompletion:
    """A one-choice chat completion; finish_reason defaults to tool_calls or stop."""
    reason = finish_reason or ("tool_calls" if tool_calls else "stop")
    choice = ChatChoice(
        message=ChatCompletionMessage(content=text, tool_calls=tool_calls or None),
        finish_reason=reason,
        logprobs=ChoiceLogprobs(content=logprobs) if logprobs is not None else None,
    )
    return ChatCompletion(model=model, choices=[choice], usage=usage)


# ---- stream -----------------------------------------------------------------------


class _Compact(BaseModel):
    """Serialised without its unset optional fields, as streamed deltas are."""

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: Any) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class ChunkFunctionCall(_Compact):
    name: str | None = None
    arguments: str | None = None


class ChunkToolCall(_Compact):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ChunkFunctionCall | None = None


class ChoiceDelta(_Compact):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ChunkToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChoiceDelta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ChatCompletionStream:
    """Builds the SSE chunks of one streamed chat completion, all sharing one id.

    Each method returns ready-to-send SSE text; :meth:`finish` ends with ``[DONE]``
    (and, when ``include_usage`` is set, the usage chunk before it).
    """

    def __init__(self, model: str, *, include_usage: bool = False) -> None:
        self.id = new_id("chatcmpl-")
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def chunk(
        self,
        delta: ChoiceDelta,
        finish_reason: FinishReason | None = None,
        logprobs: list[TokenLogprob] | None = None,
    ) -> ChatCompletionChunk:
        choice = ChunkChoice(
            delta=delta,
            finish_reason=finish_reason,
            logprobs=ChoiceLogprobs(content=logprobs) if logprobs is not None else None,
        )
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=[choice]
        )

    def role(self) -> str:
        """The opening chunk: the assistant role with empty content."""
        return sse_event(self.chunk(ChoiceDelta(role="assistant", content="")))

    def text(self, delta: str, logprobs: list[TokenLogprob] | None = None) -> str:
        return sse_event(self.chunk(ChoiceDelta(content=delta), logprobs=logprobs))

    def tool_call(self, index: int, call_id: str, name: str, arguments: str) -> str:
        """One complete tool call in a single chunk."""
        call = ChunkToolCall(
            index=index,
            id=call_id,
            type="function",
            function=ChunkFunctionCall(name=name, arguments=arguments),
        )
        return sse_event(self.chunk(ChoiceDelta(tool_calls=[call])))

    def tool_call_opened(self, index: int, call_id: str, name: str) -> str:
        """The first chunk of a call whose arguments are still to come."""
        return self.tool_call(index, call_id, name, "")

    def tool_call_arguments(self, index: int, delta: str) -> str:
        """More of call ``index``'s arguments (the chunk names only the index)."""
        call = ChunkToolCall(index=index, function=ChunkFunctionCall(arguments=delta))
        return sse_event(self.chunk(ChoiceDelta(tool_calls=[call])))

    def finish(self, finish_reason: FinishReason, usage: Usage | None = None) -> str:
        """The closing chunks: finish_reason, then usage if asked for, then ``[DONE]``."""
        events = sse_event(self.chunk(ChoiceDelta(), finish_reason=finish_reason))
        if self.include_usage and usage is not None:
            usage_chunk = ChatCompletionChunk(
                id=self.id, created=self.created, model=self.model, choices=[], usage=usage
            )
            events += sse_event(usage_chunk)
        return events + SSE_DONE
