"""The engine-neutral generation core that every LLM engine plugs into.

An engine turns a :class:`GenerationRequest` (a prompt and sampling settings) into a
stream of :class:`GeneratedToken` followed by a :class:`GenerationOutcome`. Everything
API-specific (request parsing, chat turns, tool calls, wire shapes) lives above this
line, in :mod:`kingpost.engines.llm_endpoints`, and is shared by all engines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kingpost.protocols import TokenLogprob

StopReason = Literal["stop", "length"]


@dataclass(frozen=True)
class FramedCall:
    """One way to write a tool call: ``prefix``, a JSON value matching ``schema``, ``suffix``."""

    prefix: str
    schema: dict[str, Any]
    suffix: str = ""


@dataclass(frozen=True)
class CallLayout:
    """Required tool calls in a model family's own markers, for the engine to enforce.

    The output is ``opening``, then one call written as any of ``options`` (more, joined
    by ``separator``, when ``parallel``), then ``closing``: Qwen's
    ``<tool_call>{...}</tool_call>`` is one option per tool with those as prefix and
    suffix; Mistral's ``[TOOL_CALLS][{...}, {...}]`` opens with ``[TOOL_CALLS][``.
    """

    options: tuple[FramedCall, ...]
    opening: str = ""
    separator: str = "\n"
    closing: str = ""
    parallel: bool = True


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token; ``temperature == 0`` means greedy (deterministic)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0
    json_schema: dict[str, Any] | None = None
    """When set, the output is constrained (by grammar) to JSON matching this schema."""
    call_layout: CallLayout | None = None
    """When set (instead of ``json_schema``), the output is constrained to tool calls
    written in the model's own markers."""
    grammar_trigger: str | None = None
    """With ``json_schema`` or ``call_layout``: the output is free until this regular
    expression matches all of it so far, then constrained from where its first group
    begins (``tool_choice: auto``, where a reply is text or a call)."""
    skip_special_tokens: bool = True
    """Leave control tokens out of the text; off where a model's call markers are such
    tokens (Mistral's ``[TOOL_CALLS]``)."""


@dataclass(frozen=True)
class TurnCall:
    """A tool call an earlier assistant turn made."""

    id: str
    name: str
    arguments: str
    """Its arguments as JSON text."""


@dataclass(frozen=True)
class ChatTurn:
    """One turn of a conversation, reduced to text (and, for a template that renders tools
    itself, the calls an assistant turn made or the call a ``tool`` turn answers)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    calls: tuple[TurnCall, ...] = ()
    call_id: str | None = None
    """For a ``tool`` turn: the call it is the result of."""
    name: str | None = None
    """For a ``tool`` turn: the tool's name, when known."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str | list[int]
    params: SamplingParams
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GeneratedToken:
    """One sampled token: its text (may be "" mid-way through a UTF-8 character)."""

    text: str
    logprob: TokenLogprob | None = None


@dataclass(frozen=True)
class GenerationOutcome:
    """How a generation ended, with true token counts."""

    reason: StopReason
    prompt_tokens: int
    completion_tokens: int
    stop_sequence: str | None = None
    cached_tokens: int = 0
    """Prompt tokens read from the engine's prefix cache instead of decoded."""


class StopMatcher:
    """Finds stop sequences in streamed text, holding back what could be the start of one.

    >>> matcher = StopMatcher(["END"])
    >>> matcher.feed("abc E"), matcher.feed("ND more")
    ('abc ', '')
    >>> matcher.matched
    'END'
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.matched: str | None = None
        self._pending = ""

    def feed(self, text: str) -> str:
        """Take new text; return the part that is safe to emit now."""
        if self.matched is not None:
            return ""
        self._pending += text
        first: tuple[int, str] | None = None
        for stop in self.stops:
            index = self._pending.find(stop)
            if index >= 0 and (first is None or index < first[0]):
                first = (index, stop)
        if first is not None:
            self.matched = first[1]
            safe, self._pending = self._pending[: first[0]], ""
            return safe
        keep = self._longest_partial_stop()
        cut = len(self._pending) - keep
        safe, self._pending = self._pending[:cut], self._pending[cut:]
        return safe

    def flush(self) -> str:
        """The held-back text, once the stream has ended without a match."""
        rest, self._pending = self._pending, ""
        return rest

    def _longest_partial_stop(self) -> int:
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self._pending)), longest, -1):
                if self._pending.endswith(stop[:size]):
                    longest = size
                    break
        return longest
