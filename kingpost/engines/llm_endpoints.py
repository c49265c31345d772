"""The OpenAI and Anthropic endpoint hooks, written once for every LLM engine.

An engine subclasses :class:`LLMEndpoints` and supplies four things: ``render_chat``
(its chat template), ``tokenize``, ``generate`` (the token stream) and
``context_length``; optionally ``embed``. This class turns each API's request into
one :class:`~kingpost.engines.generation.GenerationRequest`, runs it, and answers in
that API's shape, streamed or not: stop sequences, tool calls, structured output,
logprobs and usage are handled here, identically for all engines.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any, TypeVar

from starlette.responses import Response

from kingpost.engines.generation import (
    CallLayout,
    ChatTurn,
    GeneratedToken,
    GenerationOutcome,
    GenerationRequest,
    SamplingParams,
)
from kingpost.engines.llm_conversations import (
    anthropic_tool_policy,
    anthropic_turns,
    chat_tool_policy,
    chat_turns,
    responses_tool_policy,
    responses_turns,
)
from kingpost.engines.llm_replies import (
    GenerationPlan,
    ReplyDelta,
    ReplyEnd,
    collect_reply,
    read_reply,
)
from kingpost.engines.response_store import ResponseStore
from kingpost.engines.stored_responses import StoredResponses
from kingpost.engines.tool_call_stream import CallArguments, CallOpened
from kingpost.engines.tool_calls import ToolPolicy, ToolSyntax
from kingpost.protocols import (
    ChatCompletionRequest,
    ChatCompletionStream,
    CompletionRequest,
    CompletionStream,
    EmbeddingRequest,
    FunctionCall,
    InvalidParameterError,
    MessagesRequest,
    MessageStream,
    OutputFunctionCall,
    ResponsesRequest,
    ResponseStream,
    ResponseUsage,
    ToolCall,
    ToolUseBlock,
    Usage,
    anthropic_stream_error,
    chat_completion,
    completion,
    embeddings,
    message,
    new_id,
    openai_stream_error,
    parse_request,
    response_object,
)
from kingpost.protocols.openai_chat import ChatChoice, ChatCompletionMessage, ChoiceLogprobs
from kingpost.protocols.openai_completions import CompletionChoice, CompletionLogprobs

logger = logging.getLogger("kingpost.engines")

HookResult = dict[str, Any] | Response | AsyncIterator[str]
T = TypeVar("T")
DEFAULT_STATE_DIR = "~/.cache/kingpost/state"


class LLMEndpoints(abc.ABC):
    """Endpoint hooks (chat completions, completions, responses, messages, embeddings)."""

    served_model_name: str = "model"
    default_top_k: int = 40
    default_max_tokens: int | None = None
    """Output tokens for a request that sets no limit (None: what the context leaves)."""
    tool_syntax: ToolSyntax | None = None
    """The model's own tool-call format, when its chat template renders tools (then
    ``render_chat_with_tools`` renders them); None: tools are described in the prompt."""
    triggered_grammars: bool = False
    """The engine can start a constraint mid-output (``SamplingParams.grammar_trigger``):
    with ``tool_choice: auto`` a call the model begins is then enforced too."""

    def __init__(self, config: dict[str, Any], default_top_k: int, model_dir: Any = None) -> None:
        """What every engine keeps from the constructor keywords Kingpost passes."""
        self.served_model_name = str(config.get("model_name") or "model")
        self.default_top_k = default_top_k
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._response_store: ResponseStore | None = None
        self.stored_responses = StoredResponses(self.response_store)

    @property
    @abc.abstractmethod
    def context_length(self) -> int: ...

    @abc.abstractmethod
    def render_chat(self, turns: list[ChatTurn]) -> str: ...

    @abc.abstractmethod
    def tokenize(self, text: str) -> list[int]: ...

    @abc.abstractmethod
    def generate(
        self, request: GenerationRequest
    ) -> AsyncGenerator[GeneratedToken | GenerationOutcome, None]: ...

    def render_prefilled(self, turns: list[ChatTurn]) -> str:
        """The prompt continuing the last turn, an assistant's, in place (a prefill).

        Engines whose template can render a closed turn override this to cut the
        rendering right after that turn's text; this default opens a fresh reply and
        writes the text into it.
        """
        return self.render_chat(turns[:-1]) + turns[-1].content

    def render_chat_with_tools(
        self, turns: list[ChatTurn], tools: list[dict[str, Any]] | None
    ) -> str:
        """The prompt with the tools (OpenAI's shape) rendered by the model's own template;
        engines that set ``tool_syntax`` override this."""
        return self.render_chat(turns)

    def check_sampling(self, schema: dict[str, Any] | None) -> None:
        """Raise InvalidParameterError if the engine cannot enforce ``schema``."""
        return None

    def check_call_layout(self, layout: CallLayout) -> None:
        """Raise InvalidParameterError if the engine cannot enforce ``layout``."""
        return None

    async def embed(self, inputs: list[str | list[int]]) -> tuple[list[list[float]], int]:
        """Embedding vectors and the number of input tokens; engines that can, override."""
        raise InvalidParameterError("model", "this model does not serve embeddings")

    # ---- OpenAI chat completions --------------------------------------------------

    async def chat_completions(self, inputs: dict[str, Any]) -> HookResult:
        body = parse_request(ChatCompletionRequest, inputs)
        if body.stream and body.n > 1:
            raise InvalidParameterError("n", "streaming supports n=1 only")
        policy = self._tool_policy(chat_tool_policy(body))
        schema = body.response_format.schema_or_none() if body.response_format else None
        turns = chat_turns(body, policy)
        continuing = bool(getattr(body, "continue_final_message", False))
        if continuing and (not turns or turns[-1].role != "assistant"):
            raise InvalidParameterError(
                "continue_final_message", "the last message must be an assistant's"
            )
        plan = await _off_loop(
            lambda: self._plan(
                self._render(turns, prefilled=continuing, schema=schema, policy=policy),
                self._sampling(
                    body,
                    limit=body.output_token_limit,
                    schema=schema,
                    logprobs=bool(body.logprobs),
                    top_logprobs=body.top_logprobs or 0,
                ),
                body.stop_sequences,
                policy,
                param="messages",
            )
        )
        if body.stream:
            return _reporting_errors(self._stream_chat(body, plan), openai_stream_error)
        ends = await asyncio.gather(
            *(collect_reply(self.generate, plan.reseeded(i)) for i in range(body.n))
        )
        choices = [_chat_choice(index, end, body.logprobs) for index, end in enumerate(ends)]
        usage = _usage(ends, plan.prompt_tokens)
        result = chat_completion(model=self._model_name(body.model), usage=usage)
        result.choices = choices
        return result.model_dump(mode="json")

    async def _stream_chat(
        self, body: ChatCompletionRequest, plan: GenerationPlan
    ) -> AsyncGenerator[str, None]:
        stream = ChatCompletionStream(
            self._model_name(body.model), include_usage=body.include_usage
        )
        yield stream.role()
        async for event in read_reply(self.generate, plan):
            if isinstance(event, CallOpened):
                yield stream.tool_call_opened(event.index, new_id("call_"), event.name)
            elif isinstance(event, CallArguments):
                yield stream.tool_call_arguments(event.index, event.delta)
            elif isinstance(event, ReplyDelta):
                yield stream.text(event.text, event.logprobs if body.logprobs else None)
            else:
                if event.text:
                    yield stream.text(event.text, event.logprobs if body.logprobs else None)
                for index, call in enumerate(event.calls[event.streamed :], event.streamed):
                    yield stream.tool_call(index, new_id("call_"), call.name, call.arguments_json)
                yield stream.finish(_finish_reason(event), _usage([event], plan.prompt_tokens))

    # ---- OpenAI completions -------------------------------------------------------

    async def completions(self, inputs: dict[str, Any]) -> HookResult:
        body = parse_request(CompletionRequest, inputs)
        prompts = body.prompts()
        if body.stream and (body.n > 1 or len(prompts) > 1):
            raise InvalidParameterError("n", "streaming supports one prompt and n=1 only")
        if body.suffix:
            raise InvalidParameterError("suffix", "insertion (suffix) is not supported")
        sampling = self._sampling(
            body,
            limit=body.max_tokens,
            logprobs=body.logprobs is not None,
            top_logprobs=body.logprobs or 0,
        )
        plans = await _off_loop(
            lambda: [
                self._plan(prompt, sampling, body.stop_sequences, ToolPolicy(), param="prompt")
                for prompt in prompts
            ]
        )
        if body.stream:
            stream = self._stream_completion(body, plans[0], prompts[0])
            return _reporting_errors(stream, openai_stream_error)
        runs = [
            (prompt, plan.reseeded(i))
            for prompt, plan in zip(prompts, plans, strict=True)
            for i in range(body.n)
        ]
        ends = await asyncio.gather(*(collect_reply(self.generate, plan) for _, plan in runs))
        usage = _usage(ends, sum(plan.prompt_tokens for plan in plans), per_prompt=body.n)
        result = completion("", model=self._model_name(body.model), usage=usage)
        result.choices = [
            CompletionChoice(
                index=index,
                text=(prompt if body.echo and isinstance(prompt, str) else "") + end.text,
                finish_reason=_finish_reason(end),
                logprobs=CompletionLogprobs.of(end.all_logprobs)
                if body.logprobs is not None
                else None,
            )
            for index, ((prompt, _), end) in enumerate(zip(runs, ends, strict=True))
        ]
        return result.model_dump(mode="json")

    async def _stream_completion(
        self, body: CompletionRequest, plan: GenerationPlan, prompt: str | list[int]
    ) -> AsyncGenerator[str, None]:
        stream = CompletionStream(self._model_name(body.model), include_usage=body.include_usage)
        if body.echo and isinstance(prompt, str):
            yield stream.text(prompt)
        async for event in read_reply(self.generate, plan):
            if isinstance(event, CallOpened | CallArguments):
                continue  # a completion has no tools
            logprobs = event.logprobs if body.logprobs is not None else None
            if event.text:
                yield stream.text(event.text, logprobs)
            if isinstance(event, ReplyEnd):
                yield stream.finish(_finish_reason(event), _usage([event], plan.prompt_tokens))

    # ---- OpenAI responses ---------------------------------------------------------

    async def responses(self, inputs: dict[str, Any]) -> HookResult:
        body = parse_request(ResponsesRequest, inputs)
        history = await self._stored_conversation(body)
        if history:  # the stored conversation goes before this request's input
            body = parse_request(
                ResponsesRequest, {**inputs, "input": [*history, *_raw_input(inputs)]}
            )
        policy = self._tool_policy(responses_tool_policy(body))
        schema = body.text.format.schema_or_none() if body.text else None
        plan = await _off_loop(
            lambda: self._plan(
                self._render(
                    responses_turns(body, policy), prefilled=False, schema=schema, policy=policy
                ),
                self._sampling(body, limit=body.max_output_tokens, schema=schema),
                [body.stop] if isinstance(body.stop, str) else list(body.stop or []),
                policy,
                param="input",
            )
        )
        model = self._model_name(body.model)
        keep = _Keeper(self, body, inputs, history)
        if getattr(body, "background", False):
            return await self._background_response(body, plan, model, keep)
        if body.stream:
            stream = self._stream_response(body, plan, ResponseStream(model, request=body), keep)
            return _reporting_errors(stream, openai_stream_error)
        end = await collect_reply(self.generate, plan)
        calls = [
            OutputFunctionCall(
                name=call.name,
                arguments=call.arguments_json,
                status="incomplete" if call.truncated else "completed",
            )
            for call in end.calls
        ]
        result = response_object(
            end.text if not calls or end.text else None,
            model=model,
            function_calls=calls,
            usage=ResponseUsage.of(
                end.outcome.prompt_tokens, end.outcome.completion_tokens, end.outcome.cached_tokens
            ),
            incomplete=end.outcome.reason == "length",
            request=body,
        ).model_dump(mode="json")
        await keep(result)
        return result

    async def _background_response(
        self, body: ResponsesRequest, plan: GenerationPlan, model: str, keep: _Keeper
    ) -> HookResult:
        """Start generating as a task; answer with the queued response (or follow it)."""
        if not keep.wanted:
            raise InvalidParameterError(
                "background", "a background response is stored: it needs store: true"
            )
        stream = ResponseStream(model, request=body)
        queued = await self.stored_responses.start_background(
            stream.response.model_dump(mode="json"),
            self._stream_response(body, plan, stream, keep),
            keep,
        )
        if body.stream:
            return await self.stored_responses.retrieve(queued["id"], stream=True)
        return queued

    # ---- stored responses (GET/DELETE /v1/responses/{id}, input_items, cancel) ----

    async def retrieve_response(
        self, response_id: str, *, stream: bool = False, starting_after: int | None = None
    ) -> HookResult:
        return await self.stored_responses.retrieve(
            response_id, stream=stream, starting_after=starting_after
        )

    async def delete_response(self, response_id: str) -> HookResult:
        return await self.stored_responses.delete(response_id)

    async def response_input_items(
        self, response_id: str, *, after: str | None = None, limit: int = 20, order: str = "desc"
    ) -> HookResult:
        return await self.stored_responses.input_items(
            response_id, after=after, limit=limit, order=order
        )

    async def cancel_response(self, response_id: str) -> HookResult:
        return await self.stored_responses.cancel(response_id)

    def response_store(self) -> ResponseStore:
        """Where stored responses live: ``$KINGPOST_STATE_DIR/<model>/responses.sqlite3``."""
        if self._response_store is None:
            root = Path(os.environ.get("KINGPOST_STATE_DIR") or DEFAULT_STATE_DIR).expanduser()
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.served_model_name)
            self._response_store = ResponseStore(root / name / "responses.sqlite3")
        return self._response_store

    async def _stored_conversation(self, body: ResponsesRequest) -> list[dict[str, Any]]:
        previous = body.previous_response_id
        if previous is None:
            return []
        history = await asyncio.to_thread(self.response_store().conversation, previous)
        if history is None:
            raise InvalidParameterError(
                "previous_response_id", f"no stored response with id {previous!r}"
            )
        return history

    async def _stream_response(
        self, body: ResponsesRequest, plan: GenerationPlan, stream: ResponseStream, keep: _Keeper
    ) -> AsyncGenerator[str, None]:
        yield stream.created()
        async for event in read_reply(self.generate, plan):
            if isinstance(event, CallOpened):
                yield stream.function_call_opened(event.name)
            elif isinstance(event, CallArguments):
                yield stream.function_call_arguments(event.delta)
            elif event.text:
                yield stream.text(event.text)
            if isinstance(event, ReplyEnd):
                if event.streamed:
                    yield stream.function_call_closed(
                        complete=not event.calls[event.streamed - 1].truncated
                    )
                for call in event.calls[event.streamed :]:
                    yield stream.function_call(
                        call.name, call.arguments_json, complete=not call.truncated
                    )
                usage = ResponseUsage.of(
                    event.outcome.prompt_tokens,
                    event.outcome.completion_tokens,
                    event.outcome.cached_tokens,
                )
                yield stream.finish(usage, incomplete=event.outcome.reason == "length")
                await keep(stream.response.model_dump(mode="json"))

    # ---- Anthropic messages -------------------------------------------------------

    async def messages(self, inputs: dict[str, Any]) -> HookResult:
        body = parse_request(MessagesRequest, inputs)
        policy = self._tool_policy(anthropic_tool_policy(body))
        turns = anthropic_turns(body, policy)
        # A last assistant message is a prefill: the reply continues it in place.
        prefilled = bool(body.messages) and body.messages[-1].role == "assistant"
        prefilled = prefilled and turns[-1].role == "assistant"
        schema = body.output_schema()
        plan = await _off_loop(
            lambda: self._plan(
                self._render(turns, prefilled=prefilled, schema=schema, policy=policy),
                self._sampling(body, limit=body.max_tokens, schema=schema),
                body.stop_sequences or [],
                policy,
                param="messages",
            )
        )
        model = self._model_name(body.model)
        if body.stream:
            return _reporting_errors(self._stream_message(plan, model), anthropic_stream_error)
        end = await collect_reply(self.generate, plan)
        tool_uses = [ToolUseBlock(name=call.name, input=call.arguments) for call in end.calls]
        stop_reason, stop_sequence = _anthropic_stop(end)
        return message(
            end.text or None,
            model=model,
            tool_uses=tool_uses,
            stop_reason=stop_reason,
            stop_sequence=stop_sequence,
            input_tokens=end.outcome.prompt_tokens,
            output_tokens=end.outcome.completion_tokens,
        ).model_dump(mode="json")

    async def _stream_message(self, plan: GenerationPlan, model: str) -> AsyncGenerator[str, None]:
        stream = MessageStream(model, input_tokens=plan.prompt_tokens)
        yield stream.start()
        async for event in read_reply(self.generate, plan):
            if isinstance(event, CallOpened):
                yield stream.tool_use_opened(event.name)
            elif isinstance(event, CallArguments):
                yield stream.tool_use_input(event.delta)
            elif event.text:
                yield stream.text(event.text)
            if isinstance(event, ReplyEnd):
                for call in event.calls[event.streamed :]:
                    yield stream.tool_use(call.name, call.arguments)
                stop_reason, stop_sequence = _anthropic_stop(event)
                yield stream.finish(
                    stop_reason,
                    output_tokens=event.outcome.completion_tokens,
                    stop_sequence=stop_sequence,
                )

    # ---- token counting (POST /v1/messages/count_tokens, /v1/responses/input_tokens) -

    async def count_tokens(self, inputs: dict[str, Any]) -> HookResult:
        """The prompt tokens of an Anthropic messages request: ``{"input_tokens": N}``."""
        body = parse_request(MessagesRequest, {"max_tokens": 1, **inputs})
        policy = self._tool_policy(anthropic_tool_policy(body))
        turns = anthropic_turns(body, policy)
        prefilled = body.messages[-1].role == "assistant" and turns[-1].role == "assistant"
        prompt = self._render(turns, prefilled=prefilled, schema=None, policy=policy)
        return {"input_tokens": len(await asyncio.to_thread(self.tokenize, prompt))}

    async def input_tokens(self, inputs: dict[str, Any]) -> HookResult:
        """The input tokens of an OpenAI responses request, as ``/v1/responses/input_tokens``."""
        body = parse_request(ResponsesRequest, inputs)
        policy = self._tool_policy(responses_tool_policy(body))
        turns = responses_turns(body, policy)
        prompt = self._render(turns, prefilled=False, schema=None, policy=policy)
        count = len(await asyncio.to_thread(self.tokenize, prompt))
        return {"object": "response.input_tokens", "input_tokens": count}

    # ---- OpenAI embeddings --------------------------------------------------------

    async def embeddings(self, inputs: dict[str, Any]) -> HookResult:
        body = parse_request(EmbeddingRequest, inputs)
        if body.dimensions is not None:
            raise InvalidParameterError("dimensions", "this model has a fixed dimension")
        vectors, prompt_tokens = await self.embed(body.inputs())
        return embeddings(
            vectors,
            model=self._model_name(body.model),
            prompt_tokens=prompt_tokens,
            encoding_format=body.encoding_format,
        ).model_dump(mode="json")

    # ---- the shared generation path -----------------------------------------------

    def _render(
        self,
        turns: list[ChatTurn],
        *,
        prefilled: bool,
        schema: dict[str, Any] | None,
        policy: ToolPolicy,
    ) -> str:
        if not prefilled:
            if policy.native:
                return self.render_chat_with_tools(turns, policy.tool_definitions())
            return self.render_chat(turns)
        if schema is not None or (policy.call_schema() or policy.call_layout()) is not None:
            # the grammar would start a new JSON value after the prefilled text
            raise InvalidParameterError(
                "messages",
                "a prefilled assistant message cannot be combined with structured output "
                "or a forced tool call",
            )
        return self.render_prefilled(turns)

    def _tool_policy(self, policy: ToolPolicy) -> ToolPolicy:
        """The request's tool policy, in the model's own call format when it has one."""
        if self.tool_syntax is None:
            return policy
        return dataclasses.replace(policy, syntax=self.tool_syntax)

    def _model_name(self, requested: str) -> str:
        return requested or self.served_model_name

    def _sampling(
        self,
        body: Any,
        *,
        limit: int | None,
        schema: dict[str, Any] | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
    ) -> SamplingParams:
        """Sampling settings from a request body; max_tokens is settled later in _plan."""
        temperature = getattr(body, "temperature", None)
        top_p = getattr(body, "top_p", None)
        top_k = getattr(body, "top_k", None)
        return SamplingParams(
            max_tokens=limit or 0,
            temperature=1.0 if temperature is None else temperature,
            top_p=1.0 if top_p is None else top_p,
            top_k=self.default_top_k if top_k is None else top_k,
            seed=getattr(body, "seed", None),
            presence_penalty=getattr(body, "presence_penalty", None) or 0.0,
            frequency_penalty=getattr(body, "frequency_penalty", None) or 0.0,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            json_schema=schema,
        )

    def _plan(
        self,
        prompt: str | list[int],
        sampling: SamplingParams,
        stop: list[str],
        policy: ToolPolicy,
        *,
        param: str,
    ) -> GenerationPlan:
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        room = self.context_length - len(tokens)
        if not tokens:
            raise InvalidParameterError(param, "the prompt is empty")
        if room <= 0:
            raise InvalidParameterError(
                param,
                f"the prompt is {len(tokens)} tokens; the context holds {self.context_length}",
            )
        max_tokens = min(sampling.max_tokens or self.default_max_tokens or room, room)
        layout = policy.call_layout()
        schema = None if layout is not None else policy.call_schema() or sampling.json_schema
        trigger = None
        auto = policy.auto_call() if self.triggered_grammars and schema is None else None
        if layout is None and auto is not None:
            trigger, layout, schema = auto.trigger, auto.layout, auto.schema
        self.check_sampling(schema)
        if layout is not None:
            self.check_call_layout(layout)
        params = dataclasses.replace(
            sampling,
            max_tokens=max_tokens,
            json_schema=schema,
            call_layout=layout,
            grammar_trigger=trigger,
            skip_special_tokens=not (policy.native and policy.may_call),
        )
        operation = "text_completion" if param == "prompt" else "chat"
        return GenerationPlan(
            GenerationRequest(tokens, params, stop),
            policy,
            len(tokens),
            self.served_model_name,
            operation,
        )


async def _off_loop(build: Callable[[], T]) -> T:
    """Run template rendering, tokenising and grammar building off the event loop, so that
    a long prompt does not hold up other requests (llama.cpp and tokenizers drop the GIL)."""
    return await asyncio.to_thread(build)


async def _reporting_errors(
    events: AsyncGenerator[str, None], error_event: Callable[[str], str]
) -> AsyncIterator[str]:
    """Pass a stream through; if generation fails mid-way, end it with the API's error event."""
    async with aclosing(events):
        try:
            async for event in events:
                yield event
        except Exception:
            logger.exception("generation failed mid-stream")
            yield error_event("generation failed; the server log has the details")


class _Keeper:
    """Saves a finished response when its request asked for it (``store`` defaults to on)."""

    def __init__(
        self,
        endpoints: LLMEndpoints,
        body: ResponsesRequest,
        inputs: dict[str, Any],
        history: list[dict[str, Any]],
    ) -> None:
        self._endpoints = endpoints
        self.wanted = body.store is not False
        self._inputs = _raw_input(inputs)
        self._history = history

    async def __call__(self, response: dict[str, Any]) -> None:
        if not self.wanted:
            return
        store = self._endpoints.response_store()
        try:
            await asyncio.to_thread(
                store.save, response, input_items=self._inputs, history=self._history
            )
        except Exception:  # a full disk must not fail the reply already made
            logger.exception("could not store response %s", response.get("id"))


def _raw_input(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """A responses request's input as a list of items, as the client sent them."""
    given = inputs.get("input")
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    return [dict(item) for item in given or [] if isinstance(item, dict)]


def _finish_reason(end: ReplyEnd) -> Any:
    if end.calls:
        return "length" if end.truncated else "tool_calls"
    return "length" if end.outcome.reason == "length" else "stop"


def _usage(ends: list[ReplyEnd], prompt_tokens: int, per_prompt: int = 0) -> Usage:
    """Usage of the runs of one request; every ``per_prompt``-th run starts a new prompt."""
    firsts = ends[:: per_prompt or len(ends)] if ends else []
    cached = min(prompt_tokens, sum(end.outcome.cached_tokens for end in firsts))
    return Usage.of(prompt_tokens, sum(end.outcome.completion_tokens for end in ends), cached)


def _chat_choice(index: int, end: ReplyEnd, want_logprobs: bool | None) -> ChatChoice:
    calls = [
        ToolCall(
            id=new_id("call_"),
            function=FunctionCall(name=call.name, arguments=call.arguments_json),
        )
        for call in end.calls
    ] or None
    return ChatChoice(
        index=index,
        message=ChatCompletionMessage(content=None if calls else end.text, tool_calls=calls),
        finish_reason=_finish_reason(end),
        logprobs=ChoiceLogprobs(content=end.all_logprobs) if want_logprobs else None,
    )


def _anthropic_stop(end: ReplyEnd) -> tuple[Any, str | None]:
    if end.calls:
        return ("max_tokens" if end.truncated else "tool_use"), None
    if end.outcome.stop_sequence is not None:
        return "stop_sequence", end.outcome.stop_sequence
    return ("max_tokens" if end.outcome.reason == "length" else "end_turn"), None
