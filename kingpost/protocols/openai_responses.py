"""The OpenAI Responses API: the request, the response object, and a stream builder.

    >>> response_object(text="Hi", model="gemma").output[0].content[0].text
    'Hi'

The stream builder emits the events in the order the API defines: response.created,
response.in_progress, then per output item output_item.added ... output_item.done
(with content_part / output_text or function_call_arguments events inside), and
finally response.completed (or response.incomplete when the token limit was hit).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    model_serializer,
    model_validator,
)

from kingpost.protocols.ids import new_id
from kingpost.protocols.openai_common import WireModel
from kingpost.protocols.sse import sse_event

# ---- request ----------------------------------------------------------------------


class InputText(WireModel):
    type: Literal["input_text", "output_text", "text"] = "input_text"
    text: str


class InputMessage(WireModel):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[InputText]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionCallItem(WireModel):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None


class FunctionCallOutputItem(WireModel):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputText]

    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "".join(part.text for part in self.output)


def _item_kind(item: Any) -> str:
    value = item.get("type", "message") if isinstance(item, dict) else getattr(item, "type", "")
    return str(value)


InputItem = Annotated[
    Annotated[InputMessage, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(_item_kind),
]


class FunctionTool(WireModel):
    type: Literal["function"] = "function"
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunctionChoice(WireModel):
    type: Literal["function"] = "function"
    name: str


class TextFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @model_serializer(mode="wrap")
    def _schema_by_its_wire_name(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Echoed in every response object: the client reads ``schema``, not ``schema_``.
        data = handler(self)
        if isinstance(data, dict) and "schema_" in data:
            data["schema"] = data.pop("schema_")
        return data

    @model_validator(mode="after")
    def _schema_given(self) -> TextFormat:
        if self.type == "json_schema" and self.schema_ is None:
            raise ValueError("schema is required when type is 'json_schema'")
        return self

    def schema_or_none(self) -> dict[str, Any] | None:
        """The schema output must follow: any object for json_object, None for free text."""
        if self.type == "json_schema":
            return self.schema_ or {"type": "object"}
        if self.type == "json_object":
            return {"type": "object"}
        return None


class TextConfig(WireModel):
    format: TextFormat = Field(default_factory=lambda: TextFormat(type="text"))


class ResponsesRequest(WireModel):
    """The body of ``POST /v1/responses``; ``top_k``, ``seed`` and ``stop`` are extensions."""

    model: str = ""
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = None
    stop: str | list[str] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ResponsesRequest:
        choice = self.tool_choice
        names = {tool.name for tool in self.tools or []}
        if isinstance(choice, NamedFunctionChoice) and choice.name not in names:
            raise ValueError(f"tool_choice names unknown tool {choice.name!r}")
        if self.tool_choice == "required" and not self.tools:
            raise ValueError("tool_choice 'required' needs tools")
        if isinstance(self.input, list) and not self.input:
            raise ValueError("input must not be empty")
        return self

    def input_items(self) -> list[InputMessage | FunctionCallItem | FunctionCallOutputItem]:
        if isinstance(self.input, str):
            return [InputMessage(role="user", content=self.input)]
        return list(self.input)


# ---- response ---------------------------------------------------------------------


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str = Field(default_factory=lambda: new_id("msg_"))
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"] = "completed"
    content: list[OutputText] = Field(default_factory=list)


class OutputFunctionCall(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str = Field(default_factory=lambda: new_id("fc_"))
    call_id: str = Field(default_factory=lambda: new_id("call_"))
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"] = "completed"


OutputItem = OutputMessage | OutputFunctionCall


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)

    @classmethod
    def of(cls, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> ResponseUsage:
        return cls(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=cached_tokens),
        )


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseObject(BaseModel):
    id: str = Field(default_factory=lambda: new_id("resp_"))
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    status: Literal["completed", "incomplete", "in_progress", "failed"] = "completed"
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    incomplete_details: IncompleteDetails | None = None
    error: dict[str, Any] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice = "auto"
    tools: list[FunctionTool] = Field(default_factory=list)
    text: TextConfig = Field(default_factory=TextConfig)

    @classmethod
    def echoing(cls, request: ResponsesRequest | None, model: str) -> ResponseObject:
        """An empty response carrying the request's settings, as the API echoes them."""
        if request is None:
            return cls(model=model)
        return cls(
            model=model,
            instructions=request.instructions,
            max_output_tokens=request.max_output_tokens,
            metadata=request.metadata or {},
            parallel_tool_calls=request.parallel_tool_calls is not False,
            temperature=request.temperature,
            top_p=request.top_p,
            tool_choice=request.tool_choice or "auto",
            tools=request.tools or [],
            text=request.text or TextConfig(),
        )


def response_object(
    text: str | None = None,
    *,
    model: str,
    function_calls: list[OutputFunctionCall] | None = None,
    usage: ResponseUsage | None = None,
    incomplete: bool = False,
    request: ResponsesRequest | None = None,
) -> ResponseObject:
    """A finished response: a message with the text (if any), then the function calls."""
    result = ResponseObject.echoing(request, model)
    status: Literal["completed", "incomplete"] = "incomplete" if incomplete else "completed"
    if text is not None and (text or not function_calls):
        result.output.append(OutputMessage(status=status, content=[OutputText(text=text)]))
    result.output.extend(function_calls or [])
    result.usage = usage
    result.status = status
    if incomplete:
        result.incomplete_details = IncompleteDetails(reason="max_output_tokens")
    return result


# ---- stream -----------------------------------------------------------------------


class ResponseStream:
    """Builds the SSE events of one streamed response; each method returns SSE text."""

    def __init__(self, model: str, *, request: ResponsesRequest | None = None) -> None:
        self.response = ResponseObject.echoing(request, model)
        self.response.status = "in_progress"
        self._sequence = 0
        self._message: OutputMessage | None = None
        self._call: OutputFunctionCall | None = None
        self._call_index = 0  # the open call's place in the output

    def _event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse_event(payload, event=kind)

    def _snapshot(self) -> dict[str, Any]:
        return self.response.model_dump(mode="json")

    def created(self) -> str:
        """The opening events: response.created and response.in_progress."""
        return self._event("response.created", response=self._snapshot()) + self._event(
            "response.in_progress", response=self._snapshot()
        )

    def text(self, delta: str) -> str:
        """A piece of output text, opening the message item on first use."""
        events = ""
        if self._message is None:
            events += self.function_call_closed() + self._open_message()
        assert self._message is not None
        self._message.content[0].text += delta
        return events + self._event(
            "response.output_text.delta",
            item_id=self._message.id,
            output_index=len(self.response.output) - 1,
            content_index=0,
            delta=delta,
            logprobs=[],
        )

    def function_call(
        self, name: str, arguments: str, call_id: str | None = None, *, complete: bool = True
    ) -> str:
        """One whole function call item (closing any open message first); ``complete=False``
        for a call cut off by the token limit (its status is then ``incomplete``)."""
        return (
            self.function_call_opened(name, call_id)
            + self.function_call_arguments(arguments)
            + self.function_call_closed(complete=complete)
        )

    def function_call_opened(self, name: str, call_id: str | None = None) -> str:
        """A function call item whose arguments are still to come (closing any open item)."""
        events = self._close_message("completed") + self.function_call_closed()
        call = OutputFunctionCall(name=name, arguments="", status="in_progress")
        if call_id:
            call.call_id = call_id
        self._call, self._call_index = call, len(self.response.output)
        events += self._event(
            "response.output_item.added",
            output_index=self._call_index,
            item=call.model_dump(mode="json"),
        )
        self.response.output.append(call)
        return events

    def function_call_arguments(self, delta: str) -> str:
        """More of the open function call's arguments."""
        call = self._call
        assert call is not None, "no function call is open"
        call.arguments += delta
        return self._event(
            "response.function_call_arguments.delta",
            item_id=call.id,
            output_index=self._call_index,
            delta=delta,
        )

    def function_call_closed(self, *, complete: bool = True) -> str:
        """The open function call's end, if one is open (``complete=False``: its arguments
        were cut off)."""
        call, self._call = self._call, None
        if call is None:
            return ""
        index = self._call_index
        call.status = "completed" if complete else "incomplete"
        events = self._event(
            "response.function_call_arguments.done",
            item_id=call.id,
            output_index=index,
            name=call.name,
            arguments=call.arguments,
        )
        return events + self._event(
            "response.output_item.done", output_index=index, item=call.model_dump(mode="json")
        )

    def finish(self, usage: ResponseUsage | None = None, *, incomplete: bool = False) -> str:
        """Close the open item and end with response.completed or response.incomplete."""
        # an empty answer is still one (empty) message, as the API reports it
        events = self.function_call_closed(complete=not incomplete)
        events += "" if self.response.output else self._open_message()
        events += self._close_message("incomplete" if incomplete else "completed")
        self.response.usage = usage
        if incomplete:
            self.response.status = "incomplete"
            self.response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
            return events + self._event("response.incomplete", response=self._snapshot())
        self.response.status = "completed"
        return events + self._event("response.completed", response=self._snapshot())

    def _open_message(self) -> str:
        message = OutputMessage(status="in_progress")
        index = len(self.response.output)
        events = self._event(
            "response.output_item.added", output_index=index, item=message.model_dump(mode="json")
        )
        part = OutputText(text="")
        message.content.append(part)
        self.response.output.append(message)
        self._message = message
        return events + self._event(
            "response.content_part.added",
            item_id=message.id,
            output_index=index,
            content_index=0,
            part=part.model_dump(mode="json"),
        )

    def _close_message(self, status: Literal["completed", "incomplete"]) -> str:
        message = self._message
        if message is None:
            return ""
        self._message = None
        index = self.response.output.index(message)
        part = message.content[0]
        message.status = status
        return (
            self._event(
                "response.output_text.done",
                item_id=message.id,
                output_index=index,
                content_index=0,
                text=part.text,
                logprobs=[],
            )
            + self._event(
                "response.content_part.done",
                item_id=message.id,
                output_index=index,
                content_index=0,
                part=part.model_dump(mode="json"),
            )
            + self._event(
                "response.output_item.done",
                output_index=index,
                item=message.model_dump(mode="json"),
            )
        )
