"""Tool calling: in a model family's own markers, or prompt-based where it has none.

**Native** (a :class:`ToolSyntax`): when a model's chat template renders tools itself,
the tools and earlier calls and results go through it, and the reply is read in the
family's markers (Qwen / Hermes ``<tool_call>{...}</tool_call>``, Llama 3.x's bare
``{"name", "parameters"}``, Mistral's ``[TOOL_CALLS][...]``, and the others in
:data:`SYNTAXES`), several calls in one reply included. A required call is constrained
to those markers (:meth:`ToolPolicy.call_layout`).

**Prompt-based** (no syntax): the model is told about the tools in the system turn and
asked to answer a call with a bare JSON object ``{"name": ..., "arguments": {...}}``.
When a call is required (OpenAI ``tool_choice: "required"`` or a named function,
Anthropic ``any`` / ``tool``) the output is constrained to that shape by the engine's
grammar, so it always parses; with ``auto`` the reply is read as a call only if it is
such an object naming one of the tools.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from kingpost.engines.generation import CallLayout, FramedCall

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


_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class ToolSyntax:
    """How one model family writes tool calls, as its chat template shows it.

    A reply's calls begin at ``trigger`` (anywhere, or only at its start when
    ``at_start``); what comes before is text. Each call is then a JSON value, either
    holding the name and arguments (``name_key``, ``arguments_key``; a list holds
    several), or, with ``header``, the arguments after a header that names the tool.
    ``fillers`` are the markers around and between calls. The ``opening``,
    ``call_prefix`` (``{name}`` is the tool's), ``call_suffix``, ``separator`` and
    ``closing`` are how a required call is written under the grammar.
    """

    name: str
    detect: tuple[str, ...]
    """All of these are in a template of this family."""
    trigger: str
    at_start: bool = False
    fillers: tuple[str, ...] = ()
    header: re.Pattern[str] | None = None
    name_key: str = "name"
    arguments_key: str = "arguments"
    opening: str = ""
    call_prefix: str = ""
    call_suffix: str = ""
    separator: str = "\n"
    closing: str = ""
    parallel: bool = True
    keyed_by_name: bool = False
    """A call is written ``{"<tool name>": {arguments}}``."""

    def find(self, text: str) -> int:
        """Where the calls begin in ``text``, or -1."""
        if self.at_start:
            stripped = text.lstrip()
            opens = stripped.startswith((self.trigger, *self.fillers))
            return len(text) - len(stripped) if opens else -1
        return text.find(self.trigger)

    def may_begin(self, text: str) -> bool:
        """Whether ``text``, the start of a reply, is or could become the calls' start."""
        stripped = text.lstrip()
        return any(
            stripped.startswith(opener) or opener.startswith(stripped)
            for opener in (self.trigger, *self.fillers)
        )

    def read_calls(
        self, text: str, names: set[str], *, cut_off: bool = False
    ) -> list[ParsedToolCall] | None:
        """The calls written in ``text`` (from the trigger on); None if it does not parse.

        ``cut_off``: the token limit ended the reply, so the last call may be written
        only in part; it is kept (truncated) when its name is known.
        """
        calls: list[ParsedToolCall] = []
        at = 0
        while True:
            at = self._skip(text, at)
            if at >= len(text):
                return calls or None
            name: str | None = None
            if self.header is not None:
                match = self.header.match(text, at)
                if match is None:
                    return (calls or None) if cut_off else None
                name, at = match["name"].strip(), self._skip_space(text, match.end())
            try:
                value, at = _DECODER.raw_decode(text, at)
            except ValueError:
                if not cut_off:
                    return None
                partial = text[at:].rstrip()
                calls += self._truncated(partial, name, names)
                return calls or None
            for item in value if isinstance(value, list) and name is None else [value]:
                call = self._call(item, name, names)
                if call is None:
                    return None
                calls.append(call)

    def _truncated(self, partial: str, name: str | None, names: set[str]) -> list[ParsedToolCall]:
        value = complete_json_prefix(partial) if partial else {}
        items = value if isinstance(value, list) and name is None else [value]
        if not items:
            return []
        calls = [call for item in items[:-1] if (call := self._call(item, name, names))]
        last = self._call(items[-1], name, names)
        if last is not None:
            arguments = partial if name is not None else json.dumps(last.arguments)
            calls.append(ParsedToolCall(last.name, last.arguments, truncated_arguments=arguments))
        return calls

    def layout(self, tools: list[ToolSpec], parallel: bool) -> CallLayout:
        options = tuple(
            FramedCall(
                self.call_prefix.replace("{name}", tool.name),
                self._payload_schema(tool),
                self.call_suffix,
            )
            for tool in tools
        )
        return CallLayout(
            options, self.opening, self.separator, self.closing, parallel and self.parallel
        )

    def _payload_schema(self, tool: ToolSpec) -> dict[str, Any]:
        parameters = tool.parameters or {"type": "object"}
        if self.header is not None:
            return parameters
        if self.keyed_by_name:
            properties = {tool.name: parameters}
            return {"type": "object", "properties": properties, "required": [tool.name]}
        return {
            "type": "object",
            "properties": {self.name_key: {"const": tool.name}, self.arguments_key: parameters},
            "required": [self.name_key, self.arguments_key],
        }

    def _call(self, item: Any, name: str | None, names: set[str]) -> ParsedToolCall | None:
        if not isinstance(item, dict):
            return None
        if name is None:
            if isinstance(item.get("function"), dict):  # {"type": "function", "function": ...}
                item = item["function"]
            name = item.get(self.name_key, item.get("name"))
            if name is None and len(item) == 1:  # {"tool name": {arguments}}
                name, arguments = next(iter(item.items()))
            else:
                arguments = item.get(self.arguments_key, item.get("arguments", {}))
                if "parameters" in item and self.arguments_key not in item:
                    arguments = item["parameters"]
        else:
            arguments = item
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        if name not in names or not isinstance(arguments, dict):
            return None
        return ParsedToolCall(name=name, arguments=arguments)

    def _skip(self, text: str, at: int) -> int:
        """Past whitespace, the trigger (a marker, unless the call's JSON opens with it),
        fillers and separators."""
        return skip_markers(text, at, self.between_calls())

    def between_calls(self) -> tuple[str, ...]:
        """What may stand before and between calls: the trigger (unless the call's JSON
        opens with it), fillers and separators."""
        markers = self.fillers if self.at_start else (self.trigger, *self.fillers)
        return (*markers, ",", ";")

    @staticmethod
    def _skip_space(text: str, at: int) -> int:
        while at < len(text) and text[at].isspace():
            at += 1
        return at


def skip_markers(text: str, at: int, markers: tuple[str, ...]) -> int:
    """Where ``text`` goes on after whitespace and any of ``markers`` from ``at``."""
    while True:
        at = ToolSyntax._skip_space(text, at)
        for marker in markers:
            if marker and text.startswith(marker, at):
                at += len(marker)
                break
        else:
            return at


def _header(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _ds(words: str) -> str:
    """A DeepSeek marker: ``tool calls begin`` in full-width bars (U+FF5C), its words
    joined by U+2581."""
    return "<\uff5c" + words.replace(" ", "\u2581") + "\uff5c>"


# The families llama.cpp's server recognises by their chat template, most specific first.
SYNTAXES: tuple[ToolSyntax, ...] = (
    ToolSyntax(  # Hermes 2/3 Pro, Qwen 2.5 / 3 (JSON inside <tool_call>)
        "hermes",
        ("<tool_call>",),
        "<tool_call>",
        fillers=("</tool_call>",),
        call_prefix="<tool_call>\n",
        call_suffix="\n</tool_call>",
    ),
    ToolSyntax(  # Functionary v3.1 on Llama 3.1
        "functionary-v3.1",
        ("<|start_header_id|>", "<function="),
        "<function=",
        fillers=("</function>",),
        header=_header(r"(?P<name>[^>]+)>"),
        call_prefix="<function={name}>",
        call_suffix="</function>",
    ),
    ToolSyntax(  # Functionary v3.2
        "functionary-v3.2",
        (">>>all",),
        ">>>",
        header=_header(r"(?P<name>[^\n]+)\n"),
        call_prefix=">>>{name}\n",
    ),
    ToolSyntax(  # Llama 3.1 / 3.2 / 3.3: the reply is the call's JSON
        "llama3",
        ("<|start_header_id|>ipython<|end_header_id|>",),
        "{",
        at_start=True,
        fillers=("<|python_tag|>",),
        arguments_key="parameters",
        parallel=False,
    ),
    ToolSyntax(  # Magistral / Mistral Small 3.2+: [TOOL_CALLS]name[ARGS]{...}
        "magistral",
        ("[TOOL_CALLS]", "[ARGS]"),
        "[TOOL_CALLS]",
        header=_header(r"(?P<name>[^\[\s]+)\[ARGS\]"),
        call_prefix="[TOOL_CALLS]{name}[ARGS]",
        separator="",
    ),
    ToolSyntax(  # Mistral Nemo: [TOOL_CALLS][{...}, {...}]
        "mistral-nemo",
        ("[TOOL_CALLS]",),
        "[TOOL_CALLS]",
        opening="[TOOL_CALLS][",
        separator=", ",
        closing="]",
    ),
    ToolSyntax(  # Firefunction v2
        "firefunction-v2",
        (" functools[",),
        "functools",
        opening=" functools[",
        separator=", ",
        closing="]",
    ),
    ToolSyntax(  # Command R7B
        "command-r7b",
        ("<|START_ACTION|>",),
        "<|START_ACTION|>",
        fillers=("<|END_ACTION|>",),
        name_key="tool_name",
        arguments_key="parameters",
        opening="<|START_ACTION|>[",
        separator=", ",
        closing="]<|END_ACTION|>",
    ),
    ToolSyntax(  # DeepSeek R1 (and V3.1's form without "function" and the code fence)
        "deepseek",
        (_ds("tool calls begin"),),
        _ds("tool calls begin"),
        fillers=("```", _ds("tool call end"), _ds("tool calls end")),
        header=_header(
            re.escape(_ds("tool call begin"))
            + f"(?:function{re.escape(_ds('tool sep'))})?(?P<name>[^\\n<]+?)"
            + f"(?:{re.escape(_ds('tool sep'))}|\\s*```json\\s*|\\n)"
        ),
        opening=_ds("tool calls begin"),
        call_prefix=_ds("tool call begin") + "function" + _ds("tool sep") + "{name}\n```json\n",
        call_suffix="\n```" + _ds("tool call end"),
        closing=_ds("tool calls end"),
    ),
    ToolSyntax(  # IBM Granite 3.x
        "granite",
        ("<|tool_call|>",),
        "<|tool_call|>",
        opening="<|tool_call|>[",
        separator=", ",
        closing="]",
    ),
    ToolSyntax(  # Nemotron v2
        "nemotron-v2",
        ("<TOOLCALL>",),
        "<TOOLCALL>",
        fillers=("</TOOLCALL>",),
        opening="<TOOLCALL>[",
        separator=", ",
        closing="]</TOOLCALL>",
    ),
    ToolSyntax(  # Kimi K2
        "kimi-k2",
        ("<|tool_calls_section_begin|>",),
        "<|tool_calls_section_begin|>",
        fillers=("<|tool_call_end|>", "<|tool_calls_section_end|>"),
        header=_header(
            r"<\|tool_call_begin\|>\s*(?:functions\.)?(?P<name>[^:<\s]+)(?::\d+)?\s*"
            r"<\|tool_call_argument_begin\|>"
        ),
        opening="<|tool_calls_section_begin|>",
        call_prefix="<|tool_call_begin|>functions.{name}:0<|tool_call_argument_begin|>",
        call_suffix="<|tool_call_end|>",
        separator="",
        closing="<|tool_calls_section_end|>",
    ),
    ToolSyntax(  # Apertus: [{"name": {arguments}}]
        "apertus",
        ("<|tools_prefix|>",),
        "<|tools_prefix|>",
        fillers=("<|tools_suffix|>",),
        keyed_by_name=True,
        opening="<|tools_prefix|>[",
        separator=", ",
        closing="]<|tools_suffix|>",
    ),
)
# Families whose calls are not JSON (XML parameters, Python calls) or need a channel
# parser: their templates stay on the prompt-based path.
_UNSUPPORTED = (
    "<parameter=",
    "<arg_key>",
    "<|channel|>",
    "<seed:tool_call>",
    "<|tool_call_start|>",
)


def template_handles_tools(source: str) -> bool:
    """Whether a chat template renders tool definitions or calls itself."""
    return bool(re.search(r"\btools\b", source)) and (
        "tool_calls" in source or re.search(r"""['"]tool['"]""", source) is not None
    )


def syntax_for_template(source: str) -> ToolSyntax | None:
    """The tool-call syntax of a chat template's family, when it renders tools itself."""
    if not template_handles_tools(source) or any(mark in source for mark in _UNSUPPORTED):
        return None
    for syntax in SYNTAXES:
        if all(mark in source for mark in syntax.detect):
            return syntax
    return None


@dataclass(frozen=True)
class AutoCall:
    """A call enforced only once the reply starts one: ``trigger`` (a regular expression,
    as llama.cpp reads them: with ``^...$`` it must match the whole reply so far and the
    constraint starts at its first group, else at its first match anywhere), then
    ``layout`` (the model's markers) or ``schema`` (a prompt-based call's JSON)."""

    trigger: str
    layout: CallLayout | None = None
    schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class ToolPolicy:
    """The tools of one request and whether the model may, must or must not call one."""

    tools: list[ToolSpec] = field(default_factory=list)
    mode: ToolMode = "auto"
    forced: str | None = None
    """The one tool the model must call, when the request names it."""
    syntax: ToolSyntax | None = None
    """The model's own call format (its template renders tools); None: prompt-based."""
    parallel: bool = True
    """Several calls in one reply (OpenAI ``parallel_tool_calls``)."""

    @property
    def may_call(self) -> bool:
        return bool(self.tools) and self.mode != "none"

    @property
    def native(self) -> bool:
        return self.syntax is not None

    def tool_definitions(self) -> list[dict[str, Any]] | None:
        """The tools as a chat template takes them (OpenAI's shape), or None."""
        if not self.may_call:
            return None
        return [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    **({"description": tool.description} if tool.description else {}),
                    "parameters": tool.parameters or {"type": "object"},
                },
            }
            for tool in self.offered()
        ]

    def call_layout(self) -> CallLayout | None:
        """For a native syntax, how a required call must be written, else None."""
        if self.syntax is None or not self.may_call:
            return None
        if self.mode != "required" and self.forced is None:
            return None
        return self.syntax.layout(self.offered(), self.parallel)

    def auto_call(self) -> AutoCall | None:
        """For ``tool_choice: auto``: where a reply's call begins and what it must follow
        from there, so that a call the model starts is always well formed (its text
        answers stay free). None where no call may or must be made, or where the call's
        written form does not begin with what marks it."""
        if not self.may_call or self.mode == "required" or self.forced is not None:
            return None
        if self.syntax is None:
            options = [_call_schema(tool) for tool in self.offered()]
            schema = options[0] if len(options) == 1 else {"anyOf": options}
            return AutoCall(r'^\s*(\{\s*"name"[\s\S]*)$', schema=schema)
        syntax = self.syntax
        layout = syntax.layout(self.offered(), self.parallel)
        starts = [layout.opening] if layout.opening else [o.prefix for o in layout.options]
        if not all(start.startswith(syntax.trigger) for start in starts):
            return None
        marker = re.escape(syntax.trigger)
        trigger = rf"^\s*({marker}[\s\S]*)$" if syntax.at_start else marker
        return AutoCall(trigger, layout=layout)

    def parse_native(self, text: str, *, cut_off: bool = False) -> tuple[str, list[ParsedToolCall]]:
        """A native reply split into its text and its calls (none: all of it is text);
        ``cut_off``: the token limit ended it, so the last call may be truncated."""
        if self.syntax is None or not self.may_call:
            return text, []
        at = self.syntax.find(text)
        if at < 0:
            return text, []
        names = {tool.name for tool in self.tools}
        calls = self.syntax.read_calls(text[at:], names, cut_off=cut_off)
        if not calls:
            return text, []
        if not self.parallel:
            calls = calls[:1]
        return text[:at].rstrip(), calls

    def instructions(self) -> str:
        """Text for the system turn describing the tools and the call format."""
        if not self.may_call or self.syntax is not None:
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
        """The JSON schema a prompt-based reply must follow when a call is required."""
        if not self.may_call or (self.mode != "required" and self.forced is None):
            return None
        if self.syntax is not None:
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
        name = json_string(match.group(1))
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


def json_string(body: str) -> str | None:
    """The text of a JSON string written without its quotes (escapes decoded), or None."""
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
