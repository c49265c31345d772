"""The Anthropic Messages API: the request, the message, and a stream builder.

    >>> message(text="Hi", model="gemma").content[0].text
    'Hi'

:class:`MessageStream` emits events in the order the API defines: message_start, then
per content block content_block_start, content_block_delta..., content_block_stop,
then message_delta (stop reason and output token count) and message_stop.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from kingpost.protocols.ids import new_id
from kingpost.protocols.sse import sse_event

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---- request ----------------------------------------------------------------------


class TextBlockParam(_Wire):
    type: Literal["text"]
    text: str


class ToolUseBlockParam(_Wire):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlockParam(_Wire):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlockParam] = ""
    is_error: bool | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(block.text for block in self.content)


def _block_kind(block: Any) -> str:
    value = block.get("type", "") if isinstance(block, dict) else getattr(block, "type", "")
    return str(value)


ContentBlockParam = Annotated[
    Annotated[TextBlockParam, Tag("text")]
    | Annotated[ToolUseBlockParam, Tag("tool_use")]
    | Annotated[ToolResultBlockParam, Tag("tool_result")],
    Discriminator(_block_kind),
]


class MessageParam(_Wire):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlockParam]

    def blocks(self) -> list[TextBlockParam | ToolUseBlockParam | ToolResultBlockParam]:
        if isinstance(self.content, str):
            return [TextBlockParam(type="text", text=self.content)]
        return list(self.content)


class ToolParam(_Wire):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoiceParam(_Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _named_when_tool(self) -> ToolChoiceParam:
        if self.type == "tool" and not self.name:
            raise ValueError("name is required when type is 'tool'")
        return self


class JsonOutputFormat(_Wire):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Wire):
    format: JsonOutputFormat | None = None
    effort: str | None = None


class MessagesRequest(_Wire):
    """The body of ``POST /v1/messages``."""

    model: str = ""
    messages: list[MessageParam] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[TextBlockParam] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    metadata: dict[str, Any] | None = None
    output_config: OutputConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> MessagesRequest:
        choice = self.tool_choice
        if choice is not None and choice.type in ("any", "tool") and not self.tools:
            raise ValueError(f"tool_choice {choice.type!r} needs tools")
        names = {tool.name for tool in self.tools or []}
        if choice is not None and choice.type == "tool" and choice.name not in names:
            raise ValueError(f"tool_choice names unknown tool {choice.name!r}")
        return self

    def output_schema(self) -> dict[str, Any] | None:
        """The JSON schema of ``output_config.format`` (structured output), if any."""
        config = self.output_config
        return config.format.schema_ if config and config.format else None

    def system_text(self) -> str:
        if self.system is None:
            return ""
        if isinstance(self.system, str):
            return self.system
        return "\n".join(block.text for block in self.system)


# ---- response ---------------------------------------------------------------------


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str = Field(default_factory=lambda: new_id("toolu_"))
    name: str
    input: dict[str, Any]


ContentBlock = TextBlock | ToolUseBlock


class MessageUsage(BaseModel):
    input_tokens: int
    output_tokens: int


class Message(BaseModel):
    id: str = Field(default_factory=lambda: new_id("msg_"))
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[ContentBlock] = Field(default_factory=list)
    model: str
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: MessageUsage


def message(
    text: str | None = None,
    *,
    model: str,
    tool_uses: list[ToolUseBlock] | None = None,
    stop_reason: StopReason | None = None,
    stop_sequence: str | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
) -> Message:
    """A finished assistant message: a text block (if any), then the tool_use blocks."""
    content: list[ContentBlock] = []
    if text:
        content.append(TextBlock(text=text))
    content.extend(tool_uses or [])
    reason: StopReason = stop_reason or ("tool_use" if tool_uses else "end_turn")
    return Message(
        content=content,
        model=model,
        stop_reason=reason,
        stop_sequence=stop_sequence,
        usage=MessageUsage(input_tokens=input_tokens, output_tokens=output_tokens),
    )


# ---- stream -----------------------------------------------------------------------


class MessageStream:
    """Builds the SSE events of one streamed message, keeping their order valid."""

    def __init__(self, model: str, *, input_tokens: int = 0) -> None:
        self.message = Message(
            model=model, usage=MessageUsage(input_tokens=input_tokens, output_tokens=0)
        )
        self._open: Literal["text", "tool_use"] | None = None
        self._index = -1

    @staticmethod
    def _event(kind: str, **fields: Any) -> str:
        return sse_event({"type": kind, **fields}, event=kind)

    def start(self) -> str:
        """message_start, carrying the message with no content yet."""
        return self._event("message_start", message=self.message.model_dump(mode="json"))

    def text(self, delta: str) -> str:
        """A text_delta, opening a text block first if none is open."""
        events = ""
        if self._open != "text":
            events += self._close_block() + self._open_block(TextBlock(text=""), "text")
        return events + self._event(
            "content_block_delta", index=self._index, delta={"type": "text_delta", "text": delta}
        )

    def tool_use(self, name: str, input: dict[str, Any], tool_use_id: str | None = None) -> str:
        """One complete tool_use block: start, its input as one input_json_delta, stop."""
        return (
            self.tool_use_opened(name, tool_use_id)
            + self.tool_use_input(orjson.dumps(input).decode())
            + self._close_block()
        )

    def tool_use_opened(self, name: str, tool_use_id: str | None = None) -> str:
        """A tool_use block whose input is still to come (closing the open block)."""
        block = ToolUseBlock(name=name, input={})
        if tool_use_id:
            block.id = tool_use_id
        return self._close_block() + self._open_block(block, "tool_use")

    def tool_use_input(self, partial_json: str) -> str:
        """More of the open tool_use block's input, as JSON text."""
        assert self._open == "tool_use", "no tool_use block is open"
        delta = {"type": "input_json_delta", "partial_json": partial_json}
        return self._event("content_block_delta", index=self._index, delta=delta)

    def finish(
        self,
        stop_reason: StopReason,
        *,
        output_tokens: int,
        stop_sequence: str | None = None,
    ) -> str:
        """Close the open block, then message_delta and message_stop."""
        events = self._close_block()
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        events += self._event("message_delta", delta=delta, usage={"output_tokens": output_tokens})
        return events + self._event("message_stop")

    def _open_block(self, block: ContentBlock, kind: Literal["text", "tool_use"]) -> str:
        self._index += 1
        self._open = kind
        return self._event(
            "content_block_start", index=self._index, content_block=block.model_dump(mode="json")
        )

    def _close_block(self) -> str:
        if self._open is None:
            return ""
        self._open = None
        return self._event("content_block_stop", index=self._index)
