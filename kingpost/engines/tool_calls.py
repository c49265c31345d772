"""Tool calling for engines whose models have no native tool format.

The model is told about the tools in the system turn and asked to answer a call
with a bare JSON object ``{"name": ..., "arguments": {...}}``. When a call is
required (OpenAI ``tool_choice: "required"`` or a named function, Anthropic
``any`` / ``tool``) the output is constrained to that shape by the engine's
grammar, so it always parses; with ``auto`` the reply is read as a call only if
it is such an object naming one of the tools.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

ToolMode = Literal["none", "auto", "required"]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})


@dataclass(frozen=True)
class ParsedToolCall:
    name: str
    arguments: dict[str, Any]
    truncated_arguments: str | None = None
    """For a call cut short by the token limit: its arguments as far as they were written
    (``arguments`` then holds what of them parses)."""

    @property
    def truncated(self) -> bool:
        return self.truncated_arguments is not None

    @property
    def arguments_json(self) -> str:
        if self.truncated_arguments is not None:
            return self.truncated_arguments
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class ToolPolicy:
    """The tools of one request and whether the model may, must or must not call one."""

    tools: list[ToolSpec] = field(default_factory=list)
    mode: ToolMode = "auto"
    forced: str | None = None
    """The one tool the model must call, when the request names it."""

    @property
    def may_call(self) -> bool:
        return bool(self.tools) and self.mode != "none"

    def instructions(self) -> str:
        """Text for the system turn describing the tools and the call format."""
        if not self.may_call:
            return ""
        listing = "\n".join(
            json.dumps(
                {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
            )
            for tool in self.offered()
        )
        return (
            "You can call these functions:\n"
            f"{listing}\n"
            'To call one, reply with only a JSON object {"name": <function name>, '
            '"arguments": <arguments object>} and nothing else.'
        )

    def offered(self) -> list[ToolSpec]:
        if self.forced is not None:
            return [tool for tool in self.tools if tool.name == self.forced]
        return self.tools

    def call_schema(self) -> dict[str, Any] | None:
        """The JSON schema a reply must follow when a call is required, else None."""
        if not self.may_call or (self.mode != "required" and self.forced is None):
            return None
        options = [_call_schema(tool) for tool in self.offered()]
        return options[0] if len(options) == 1 else {"anyOf": options}

    def parse(self, text: str) -> ParsedToolCall | None:
        """The call the reply makes, or None if it is an ordinary answer."""
        if not self.may_call:
            return None
        body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```")
        try:
            value = json.loads(body)
        except ValueError:
            return None
        if not isinstance(value, dict) or value.get("name") not in {t.name for t in self.tools}:
            return None
        arguments = value.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        if not isinstance(arguments, dict):
            return None
        return ParsedToolCall(name=value["name"], arguments=arguments)

    def parse_truncated(self, text: str) -> ParsedToolCall | None:
        """The call a reply cut short by the token limit was making, if it names a tool.

        The call's JSON is written name first, so the name is known as soon as its
        closing quote is (or, for a forced tool or a prefix only one tool has, before).
        """
        if not self.may_call:
            return None
        body = text.strip().removeprefix("```json").removeprefix("```").lstrip()
        match = _CALL_OPENING.match(body)
        if match is None:
            return None
        name = _json_string(match.group(1))
        names = [tool.name for tool in self.offered()]
        if match.group(2) != '"':  # the name itself was cut off
            names = [known for known in names if name is not None and known.startswith(name)]
            name = names[0] if len(names) == 1 else None
        if self.forced is not None:
            name = self.forced
        if name is None or name not in {tool.name for tool in self.tools}:
            return None
        rest = body[match.end() :]
        opening = _ARGUMENTS_OPENING.match(rest)
        partial = rest[opening.end() :].rstrip() if opening else ""
        value = complete_json_prefix(partial) if partial else None
        return ParsedToolCall(
            name, value if isinstance(value, dict) else {}, truncated_arguments=partial
        )


_CALL_OPENING = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)("?)')
_ARGUMENTS_OPENING = re.compile(r'\s*,\s*"arguments"\s*:\s*')


def _json_string(body: str) -> str | None:
    try:
        return str(json.loads(f'"{body}"'))
    except ValueError:
        return None


def complete_json_prefix(text: str, *, attempts: int = 64) -> Any:
    """The value a cut-off JSON text was on its way to, as far as it got; None if none.

    >>> complete_json_prefix('{"city": "Os')
    {'city': 'Os'}
    >>> complete_json_prefix('{"a": 1, "b": ')
    {'a': 1}
    """
    for end in range(len(text), max(len(text) - attempts, 0), -1):
        candidate = _closed(text[:end])
        if candidate is None:
            continue
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def _closed(prefix: str) -> str | None:
    """``prefix`` with its open string and brackets closed, or None if it cannot be."""
    closers: list[str] = []
    in_string = escaped = False
    for char in prefix:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            closers.append("}" if char == "{" else "]")
        elif char in "}]":
            if not closers:
                return None
            closers.pop()
    if escaped:
        return None
    text = prefix + ('"' if in_string else "")
    text = text.rstrip().removesuffix(",")
    return text + "".join(reversed(closers))


def format_call(name: str, arguments: dict[str, Any] | str) -> str:
    """A past call as the model was asked to write it (for earlier assistant turns)."""
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # keep unparsable arguments as the string
            arguments = json.loads(arguments)
    return json.dumps({"name": name, "arguments": arguments})


def format_result(call_id: str, content: str, *, is_error: bool = False) -> str:
    """A tool's result, as a user turn the model reads before answering."""
    label = "Error from function call" if is_error else "Result of function call"
    return f"{label} {call_id}: {content}"


def _call_schema(tool: ToolSpec) -> dict[str, Any]:
    parameters = tool.parameters or {"type": "object"}
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": parameters},
        "required": ["name", "arguments"],
    }
