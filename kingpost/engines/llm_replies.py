"""Reading an engine's token stream as a reply: stop sequences cut, tool calls recognised.

:func:`read_reply` runs one :class:`GenerationPlan` and yields the reply as it
should reach the client: text deltas with their logprobs, and a final
:class:`ReplyEnd` with the outcome and, when the model answered with a tool call,
the parsed call. The same reading serves every API and every engine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from kingpost.engines.generation import (
    GeneratedToken,
    GenerationOutcome,
    GenerationRequest,
    StopMatcher,
)
from kingpost.engines.tool_call_stream import CallArguments, CallEvent, CallOpened, CallStreamer
from kingpost.engines.tool_calls import ParsedToolCall, ToolPolicy
from kingpost.observe.generations import GenerationWatch
from kingpost.protocols import TokenLogprob

Generate = Callable[[GenerationRequest], AsyncGenerator[GeneratedToken | GenerationOutcome, None]]


@dataclass(frozen=True)
class GenerationPlan:
    """One generation, ready to run, with what is needed to read its output."""

    request: GenerationRequest
    policy: ToolPolicy
    prompt_tokens: int
    model: str = "model"
    operation: str = "chat"
    """The GenAI operation (``chat``, ``text_completion``), for metrics and traces."""

    def reseeded(self, offset: int) -> GenerationPlan:
        seed = self.request.params.seed
        if seed is None or offset == 0:
            return self
        params = dataclasses.replace(self.request.params, seed=seed + offset)
        return dataclasses.replace(self, request=dataclasses.replace(self.request, params=params))


@dataclass
class ReplyDelta:
    text: str
    logprobs: list[TokenLogprob]


@dataclass
class ReplyEnd:
    outcome: GenerationOutcome
    calls: list[ParsedToolCall] = field(default_factory=list)
    """The tool calls the reply made (several, in a native syntax, for parallel calls)."""
    text: str = ""
    """Text released at the end (held back while it might have been a tool call)."""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    """Logprobs of the tokens behind ``text``."""
    all_logprobs: list[TokenLogprob] = field(default_factory=list)
    streamed: int = 0
    """How many of ``calls`` (the first ones) were already sent as call events."""

    @property
    def truncated(self) -> bool:
        """A call was cut off by the token limit."""
        return any(call.truncated for call in self.calls)


class _CallEvents:
    """The calls a reader has seen begin and grow, for a stream to send as they come."""

    def __init__(self, policy: ToolPolicy) -> None:
        self.streamer = CallStreamer(policy)
        self._events: list[CallEvent] = []

    def take_events(self) -> list[CallEvent]:
        """The call events since the last call."""
        events, self._events = self._events, []
        return events


class ToolCallReader(_CallEvents):
    """Decides, from the first visible characters, whether a reply is a tool call.

    A reply that may be a call (it opens with ``{``) is held back as text; a call's name
    and arguments are reported as they come (:meth:`take_events`). Any other reply is
    passed through as it streams.
    """

    def __init__(self, policy: ToolPolicy) -> None:
        self.policy = policy
        self._decided = not policy.may_call
        self._holding = False
        self._held = ""
        super().__init__(policy)

    def feed(self, text: str) -> str:
        if self._decided and not self._holding:
            return text
        self._held += text
        if not self._decided:
            if not self._held.strip():
                return ""
            self._decided = True
            self._holding = self._held.lstrip().startswith(("{", "```"))
            if not self._holding:
                text, self._held = self._held, ""
                return text
            text = self._held
        self._events += self.streamer.feed(text)
        return ""

    def finish(self, *, cut_off: bool = False) -> tuple[str, list[ParsedToolCall]]:
        """What is left to emit as text, and the call if the reply was one.

        ``cut_off``: the token limit ended the reply, so a call may be incomplete; it is
        still reported as a (truncated) call rather than as the JSON written so far.
        """
        held, self._held = self._held, ""
        call = self.policy.parse(held) if self._holding else None
        if call is None and cut_off and self._holding:
            call = self.policy.parse_truncated(held)
        elif call is None and cut_off and self.policy.call_schema() is not None:
            call = self.policy.parse_truncated(held)  # a required call cut before its first "{"
        calls = self.streamer.reconcile([call] if call is not None else [])
        return ("", calls) if calls else (held, [])


class NativeCallReader(_CallEvents):
    """Reads a reply in the model's own call markers (``policy.syntax``).

    Text streams until the calls' trigger appears (text that could be the start of
    it is held back meanwhile); from the trigger on, the rest is held, its calls
    reported as they come (:meth:`take_events`) and read whole at the end (text again
    if it does not parse and nothing of it was reported).
    """

    def __init__(self, policy: ToolPolicy) -> None:
        assert policy.syntax is not None
        self.policy = policy
        self.syntax = policy.syntax
        self._active = policy.may_call
        self._text = ""  # the reply so far
        self._sent = 0  # how much of it has been emitted
        self._calls_at = -1
        super().__init__(policy)

    def feed(self, text: str) -> str:
        if not self._active:
            return text
        self._text += text
        if self._calls_at >= 0:
            self._events += self.streamer.feed(text)
            return ""
        syntax = self.syntax
        at = syntax.find(self._text)
        if at >= 0:
            self._calls_at = at
            self._events += self.streamer.feed(self._text[at:])
            return self._release(at)
        if syntax.at_start:
            if self._text.strip() and not syntax.may_begin(self._text):
                self._active = False  # an ordinary answer: stream the rest as it comes
                return self._release(len(self._text))
            return ""
        return self._release(len(self._text) - _partial_suffix(self._text, syntax.trigger))

    def finish(self, *, cut_off: bool = False) -> tuple[str, list[ParsedToolCall]]:
        if self._calls_at >= 0:
            _, calls = self.policy.parse_native(self._text, cut_off=cut_off)
            calls = self.streamer.reconcile(calls)
            if calls:
                return "", calls
        return self._release(len(self._text)), []

    def _release(self, upto: int) -> str:
        released, self._sent = self._text[self._sent : upto], max(self._sent, upto)
        return released


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that begins ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


async def collect_reply(generate: Generate, plan: GenerationPlan) -> ReplyEnd:
    """Run a plan to the end; the ReplyEnd's text is the whole reply."""
    text: list[str] = []
    async for event in read_reply(generate, plan):
        if isinstance(event, CallOpened | CallArguments):
            continue
        text.append(event.text)
        if isinstance(event, ReplyEnd):
            event.text = "".join(text)
            return event
    raise RuntimeError("generation ended without an outcome")


async def read_reply(
    generate: Generate, plan: GenerationPlan
) -> AsyncIterator[ReplyDelta | CallEvent | ReplyEnd]:
    """Text deltas (stop sequences cut, possible tool calls held back), the calls' names
    and arguments as they are written (:class:`CallOpened`, :class:`CallArguments`), then
    one ReplyEnd."""
    matcher = StopMatcher(plan.request.stop)
    reader: ToolCallReader | NativeCallReader = (
        NativeCallReader(plan.policy) if plan.policy.native else ToolCallReader(plan.policy)
    )
    logprobs: list[TokenLogprob] = []
    all_logprobs: list[TokenLogprob] = []
    produced = 0
    outcome: GenerationOutcome | None = None
    watch = GenerationWatch(plan.operation, plan.model, plan.request.params)
    first_token_at: float | None = None
    try:
        async with aclosing(generate(plan.request)) as tokens:
            async for item in tokens:
                if isinstance(item, GenerationOutcome):
                    outcome = item
                    break
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                produced += 1
                if item.logprob is not None:
                    logprobs.append(item.logprob)
                    all_logprobs.append(item.logprob)
                text = reader.feed(matcher.feed(item.text))
                if text:
                    yield ReplyDelta(text, logprobs)
                    logprobs = []
                for call_event in reader.take_events():
                    yield call_event
                if matcher.matched is not None:
                    break  # leaving the block closes the token stream, which stops the engine
        if outcome is None or matcher.matched is not None:
            outcome = GenerationOutcome(
                reason="stop",
                prompt_tokens=plan.prompt_tokens,
                completion_tokens=produced,
                stop_sequence=matcher.matched,
                cached_tokens=outcome.cached_tokens if outcome is not None else 0,
            )
        else:
            tail = reader.feed(matcher.flush())
            if tail:
                yield ReplyDelta(tail, logprobs)
                logprobs = []
            for call_event in reader.take_events():
                yield call_event
        # Reported before the last yield: a reader may stop reading at the ReplyEnd.
        watch.finish(
            first_token_at, outcome.prompt_tokens, outcome.completion_tokens, outcome.reason
        )
        text, calls = reader.finish(cut_off=outcome.reason == "length")
        policy = plan.policy
        if not calls and (policy.call_schema() or policy.call_layout()) is not None:
            text = ""  # a required call that never got its name: nothing of it is shown
        streamed = len(reader.streamer.calls) if calls else 0
        yield ReplyEnd(outcome, calls, text, logprobs, all_logprobs, streamed)
    finally:
        if not watch.finished:  # stopped: the client left, or the engine failed
            watch.finish(first_token_at, plan.prompt_tokens, produced, "abort")
