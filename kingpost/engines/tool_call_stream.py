"""Following tool calls while they are written, so that a stream can send them early.

A streamed reply that makes a tool call sends the call's name as soon as it is known
and its arguments as they are generated, as OpenAI's and Anthropic's APIs do
(``tool_calls[].function.arguments`` deltas, ``input_json_delta``), instead of the whole
call at the end. :class:`CallStreamer` reads the calls' part of a reply piece by piece:
it waits for a call's head (its markers and name, up to where the arguments object
opens), then passes the arguments on character by character until that object closes,
then waits for the next call's head.

It only reports what it is sure of: a head it cannot read (keys in another order,
arguments written as a string, a name that is no tool's) ends the streaming, and what
is left is read whole at the end, as before. When the engine's grammar holds the calls
to their layout (a required call, or ``auto`` once a call starts) every call streams.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from kingpost.engines.tool_calls import (
    ParsedToolCall,
    ToolPolicy,
    ToolSyntax,
    complete_json_prefix,
    json_string,
    skip_markers,
)

HEAD_LIMIT = 512
"""How far past the last call a head may still be forming before streaming stops."""

_NAME = r'"(?P<name>(?:[^"\\]|\\.)*)"'
"""A name written as a JSON string (its escapes still in it)."""


@dataclass(frozen=True)
class CallOpened:
    """A call's name is known: the call is ``index`` (from 0) in the reply."""

    index: int
    name: str


@dataclass(frozen=True)
class CallArguments:
    """More of call ``index``'s arguments, as the model wrote them."""

    index: int
    delta: str


CallEvent = CallOpened | CallArguments


@dataclass
class StreamedCall:
    name: str
    arguments: str = ""
    complete: bool = False
    """Its arguments object closed."""

    def parsed(self) -> ParsedToolCall:
        """The call as far as it was written (truncated when its arguments did not end or
        do not parse)."""
        try:
            value = json.loads(self.arguments)
        except ValueError:
            value = None
        if self.complete and isinstance(value, dict):
            return ParsedToolCall(self.name, value)
        partial = complete_json_prefix(self.arguments) if self.arguments else None
        arguments = partial if isinstance(partial, dict) else {}
        return ParsedToolCall(self.name, arguments, truncated_arguments=self.arguments)


class CallStreamer:
    """Reads the calls' part of a reply (from its first marker on) as it comes."""

    def __init__(self, policy: ToolPolicy) -> None:
        syntax = policy.syntax
        self._syntax = syntax
        self._names = {tool.name for tool in policy.tools}
        self._parallel = policy.parallel and syntax is not None and syntax.parallel
        self._head = _head_pattern(syntax)
        self._text = ""
        self._at = 0  # where the next head is looked for, or how far the arguments are read
        self._open: StreamedCall | None = None
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._stopped = False
        self.calls: list[StreamedCall] = []

    def feed(self, text: str) -> list[CallEvent]:
        self._text += text
        events: list[CallEvent] = []
        while not self._stopped:
            if self._open is None and not self._read_head(events):
                break
            if not self._read_arguments(events):
                break
        return events

    def reconcile(self, parsed: list[ParsedToolCall]) -> list[ParsedToolCall]:
        """The reply's calls, given those read from its whole text: those if they agree
        with what was streamed, else the streamed calls as far as they were written."""
        streamed = self.calls
        if len(parsed) >= len(streamed) and all(
            whole.name == call.name for whole, call in zip(parsed, streamed, strict=False)
        ):
            return parsed
        return [call.parsed() for call in streamed]

    def _read_head(self, events: list[CallEvent]) -> bool:
        if self.calls and not self._parallel:
            self._stopped = True
            return False
        at = self._skip(self._at)
        match = self._head.match(self._text, at)
        if match is None:
            self._stopped = len(self._text) - at > HEAD_LIMIT
            return False
        written = match["name"]
        quoted = self._syntax is None or self._syntax.header is None
        name = json_string(written) if quoted else written.strip()
        if name not in self._names:
            self._stopped = True
            return False
        self._open = StreamedCall(name)
        self.calls.append(self._open)
        events.append(CallOpened(len(self.calls) - 1, name))
        self._at = match.end()
        self._depth, self._in_string, self._escaped = 0, False, False
        return True

    def _read_arguments(self, events: list[CallEvent]) -> bool:
        """Pass on the arguments written so far; True once their object has closed."""
        call = self._open
        assert call is not None
        text, start = self._text, self._at
        end = len(text)
        closed = False
        for at in range(start, end):
            char = text[at]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    end, closed = at + 1, True
                    break
        delta = text[start:end]
        if delta:
            call.arguments += delta
            events.append(CallArguments(len(self.calls) - 1, delta))
        self._at = end
        if closed:
            call.complete = True
            self._open = None
        return closed

    def _skip(self, at: int) -> int:
        """Past whitespace and what may stand between calls: markers, separators, the end
        of the last call's object and the brackets of a list of calls."""
        syntax = self._syntax
        markers = () if syntax is None else (*syntax.between_calls(), "[", "]", "}")
        return skip_markers(self._text, at, markers)


def _head_pattern(syntax: ToolSyntax | None) -> re.Pattern[str]:
    """What comes before a call's arguments object, up to where it opens."""
    opens = r"\s*(?=\{)"
    if syntax is None:  # prompt-based: {"name": ..., "arguments": {...}}, maybe fenced
        return re.compile(
            rf'(?:```(?:json)?\s*)?\{{\s*"name"\s*:\s*{_NAME}'
            rf'\s*,\s*"arguments"\s*:{opens}'
        )
    if syntax.header is not None:
        return re.compile(syntax.header.pattern + opens)
    if syntax.keyed_by_name:
        return re.compile(rf"\{{\s*{_NAME}\s*:{opens}")
    name_keys = "|".join(re.escape(key) for key in {syntax.name_key, "name"})
    argument_keys = "|".join(re.escape(key) for key in {syntax.arguments_key, "arguments"})
    call_id = r'(?:"(?:tool_call_id|id)"\s*:\s*(?:"[^"]*"|\d+)\s*,\s*)?'
    return re.compile(
        rf'\{{\s*{call_id}"(?:{name_keys})"\s*:\s*{_NAME}\s*,\s*"(?:{argument_keys})"\s*:{opens}'
    )
