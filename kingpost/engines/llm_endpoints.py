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
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

from starlette.responses import Response

from kingpost.engines.generation import (
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
from kingpost.engines.tool_calls import ToolPolicy
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


class LLMEndpoints(abc.ABC):
    """Endpoint hooks (chat completions, completions, responses, messages, embeddings)."""

    served_model_name: str = "model"
    default_top_k: int = 40

    def __init__(self, config: dict[str, Any], default_top_k: int, model_dir: Any = None) -> None:
        """What every engine keeps from the constructor keywords Kingpost passes."""
        self.served_model_name = str(config.get("model_name") or "model")
        self.default_top_k = default_top_k
        self._model_dir = Path(model_dir) if model_dir is not None else None

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

    def check_sampling(self, schema: dict[str, Any] | None) -> None:
        """Raise InvalidParameterError if the engine cannot enforce ``schema``."""
        return None

    async def embed(self, inputs: list[str | list[int]]) -> tuple[list[list[float]], int]:
        """Embedding vectors and the number of input tokens; engines that can, override."""
        raise InvalidParameterError("model", "this model does not serve embeddings")

    # ---- OpenAI chat completions --------------------------------------------------

    async def chat_completions(self, inputs: dict[str, Any]) -> HookResult:
        body = parse_request(ChatCompletionRequest, inputs)
        if body.stream and body.n > 1:
            raise InvalidParameterError("n", "streaming supports n=1 only")
        policy = chat_tool_policy(body)
        schema = body.response_format.schema_or_none() if body.response_format else None
        plan = self._plan(
            self.render_chat(chat_turns(body, policy)),
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
            if isinstance(event, ReplyDelta):
                yield stream.text(event.text, event.logprobs if body.logprobs else None)
                continue
            if event.text:
                yield stream.text(event.text, event.logprobs if body.logprobs else None)
            if event.call is not None:
                yield stream.tool_call(
                    0, new_id("call_"), event.call.name, event.call.arguments_json
                )
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
        plans = [
            self._plan(prompt, sampling, body.stop_sequences, ToolPolicy(), param="prompt")
            for prompt in prompts
        ]
        if body.stream:
            stream = self._stream_completion(body, plans[0], prompts[0])
            return _reporting_errors(stream, openai_stream_error)
        runs = [
            (prompt, plan.reseeded(i))
            for prompt, plan in zip(prompts, plans, strict=True)
            for i in range(body.n)
        ]
        ends = await asyncio.gather(*(collect_reply(self.generate, plan) for _, plan in runs))
        usage = _usage(ends, sum(plan.prompt_tokens for plan in plans))
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
            logprobs = event.logprobs if body.logprobs is not None else None
            if event.text:
                yield stream.text(event.text, logprobs)
            if isinstance(event, ReplyEnd):
                yield stream.finish(_finish_reason(event), _usage([event], plan.prompt_tokens))

    # ---- OpenAI responses ---------------------------------------------------------

    async def responses(self, inputs: dict[str, Any]) -> HookResult:
        body = parse_request(ResponsesRequest, inputs)
        policy = responses_tool_policy(body)
        schema = body.text.format.schema_or_none() if body.text else None
        plan = self._plan(
            self.render_chat(responses_turns(body, policy)),
            self._sampling(body, limit=body.max_output_tokens, schema=schema),
            [body.stop] if isinstance(body.stop, str) else list(body.stop or []),
            policy,
            param="input",
        )
        model = self._model_name(body.model)
        if body.stream:
            return _reporting_errors(self._stream_response(body, plan, model), openai_stream_error)
        end = await collect_reply(self.generate, plan)
        calls = (
            [OutputFunctionCall(name=end.call.name, arguments=end.call.arguments_json)]
            if end.call
            else []
        )
        return response_object(
            end.text if not calls or end.text else None,
            model=model,
            function_calls=calls,
            usage=ResponseUsage.of(end.outcome.prompt_tokens, end.outcome.completion_tokens),
            incomplete=end.outcome.reason == "length",
            request=body,
        ).model_dump(mode="json")

    async def _stream_response(
        self, body: ResponsesRequest, plan: GenerationPlan, model: str
    ) -> AsyncGenerator[str, None]:
        stream = ResponseStream(model, request=body)
        yield stream.created()
        async for event in read_reply(self.generate, plan):
            if event.text:
                yield stream.text(event.text)
            if isinstance(event, ReplyEnd):
                if event.call is not None:
                    yield stream.function_call(event.call.name, event.call.arguments_json)
                usage = ResponseUsage.of(
                    event.outcome.prompt_tokens, event.outcome.completion_tokens
                )
                yield stream.finish(usage, incomplete=event.outcome.reason == "length")

    # ---- Anthropic messages -------------------------------------------------------

    async def messages(self, inputs: dict[str, Any]) -> HookResult:
        body = parse_request(MessagesRequest, inputs)
        policy = anthropic_tool_policy(body)
        plan = self._plan(
            self.render_chat(anthropic_turns(body, policy)),
            self._sampling(body, limit=body.max_tokens, schema=body.output_schema()),
            body.stop_sequences or [],
            policy,
            param="messages",
        )
        model = self._model_name(body.model)
        if body.stream:
            return _reporting_errors(self._stream_message(plan, model), anthropic_stream_error)
        end = await collect_reply(self.generate, plan)
        tool_uses = [ToolUseBlock(name=end.call.name, input=end.call.arguments)] if end.call else []
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
            if event.text:
                yield stream.text(event.text)
            if isinstance(event, ReplyEnd):
                if event.call is not None:
                    yield stream.tool_use(event.call.name, event.call.arguments)
                stop_reason, stop_sequence = _anthropic_stop(event)
                yield stream.finish(
                    stop_reason,
                    output_tokens=event.outcome.completion_tokens,
                    stop_sequence=stop_sequence,
                )

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
        max_tokens = min(sampling.max_tokens or room, room)
        schema = policy.call_schema() or sampling.json_schema
        self.check_sampling(schema)
        params = dataclasses.replace(sampling, max_tokens=max_tokens, json_schema=schema)
        operation = "text_completion" if param == "prompt" else "chat"
        return GenerationPlan(
            GenerationRequest(tokens, params, stop),
            policy,
            len(tokens),
            self.served_model_name,
            operation,
        )


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


def _finish_reason(end: ReplyEnd) -> Any:
    if end.call is not None:
        return "tool_calls"
    return "length" if end.outcome.reason == "length" else "stop"


def _usage(ends: list[ReplyEnd], prompt_tokens: int) -> Usage:
    return Usage.of(prompt_tokens, sum(end.outcome.completion_tokens for end in ends))


def _chat_choice(index: int, end: ReplyEnd, want_logprobs: bool | None) -> ChatChoice:
    calls = (
        [
            ToolCall(
                id=new_id("call_"),
                function=FunctionCall(name=end.call.name, arguments=end.call.arguments_json),
            )
        ]
        if end.call
        else None
    )
    return ChatChoice(
        index=index,
        message=ChatCompletionMessage(content=None if calls else end.text, tool_calls=calls),
        finish_reason=_finish_reason(end),
        logprobs=ChoiceLogprobs(content=end.all_logprobs) if want_logprobs else None,
    )


def _anthropic_stop(end: ReplyEnd) -> tuple[Any, str | None]:
    if end.call is not None:
        return "tool_use", None
    if end.outcome.stop_sequence is not None:
        return "stop_sequence", end.outcome.stop_sequence
    return ("max_tokens" if end.outcome.reason == "length" else "end_turn"), None
