"""Each API's conversation, reduced to plain chat turns and a tool policy.

System prompts come in three forms (OpenAI ``system``/``developer`` messages, the
Responses ``instructions``, Anthropic's top-level ``system``); tool calls and tool
results in three more. All become :class:`ChatTurn` lists that any chat template
renders: one leading system turn, then alternating user/assistant turns. For a
template that renders tools itself (``policy.native``) earlier calls stay on their
assistant turns and results are ``tool`` turns; otherwise both are written as text.
"""

from __future__ import annotations

import dataclasses
import json

from kingpost.engines.generation import ChatTurn, TurnCall
from kingpost.engines.tool_calls import ToolPolicy, ToolSpec, format_call, format_result
from kingpost.protocols import ChatCompletionRequest, MessagesRequest, ResponsesRequest
from kingpost.protocols.anthropic_messages import TextBlockParam, ToolResultBlockParam
from kingpost.protocols.openai_chat import NamedToolChoice
from kingpost.protocols.openai_responses import (
    FunctionCallItem,
    FunctionCallOutputItem,
    NamedFunctionChoice,
)


def chat_tool_policy(body: ChatCompletionRequest) -> ToolPolicy:
    tools = [
        ToolSpec(tool.function.name, tool.function.description, tool.function.parameters)
        for tool in body.tools or []
    ]
    choice = body.tool_choice
    parallel = body.parallel_tool_calls is not False
    if isinstance(choice, NamedToolChoice):
        return ToolPolicy(tools, "required", forced=choice.function.name, parallel=parallel)
    return ToolPolicy(tools, choice or "auto", parallel=parallel)


def chat_turns(body: ChatCompletionRequest, policy: ToolPolicy) -> list[ChatTurn]:
    turns: list[ChatTurn] = []
    for item in body.messages:
        if item.role in ("system", "developer"):
            turns.append(ChatTurn("system", item.text()))
        elif item.role == "user":
            turns.append(ChatTurn("user", item.text()))
        elif item.role == "assistant":
            calls = [
                TurnCall(call.id, call.function.name, call.function.arguments)
                for call in item.tool_calls or []
            ]
            turns.append(_assistant(item.text(), calls, policy))
        else:
            turns.append(_result(item.tool_call_id or "", item.text(), False, policy))
    return settle_turns(turns, policy)


def responses_tool_policy(body: ResponsesRequest) -> ToolPolicy:
    tools = [
        ToolSpec(tool.name, tool.description, tool.parameters or {"type": "object"})
        for tool in body.tools or []
    ]
    choice = body.tool_choice
    parallel = body.parallel_tool_calls is not False
    if isinstance(choice, NamedFunctionChoice):
        return ToolPolicy(tools, "required", forced=choice.name, parallel=parallel)
    return ToolPolicy(tools, choice or "auto", parallel=parallel)


def responses_turns(body: ResponsesRequest, policy: ToolPolicy) -> list[ChatTurn]:
    turns = [ChatTurn("system", body.instructions)] if body.instructions else []
    for item in body.input_items():
        if isinstance(item, FunctionCallItem):
            call = TurnCall(item.call_id, item.name, item.arguments)
            turns.append(_assistant("", [call], policy))
        elif isinstance(item, FunctionCallOutputItem):
            turns.append(_result(item.call_id, item.text(), False, policy))
        elif item.role in ("system", "developer"):
            turns.append(ChatTurn("system", item.text()))
        else:
            turns.append(ChatTurn("assistant" if item.role == "assistant" else "user", item.text()))
    return settle_turns(turns, policy)


def anthropic_tool_policy(body: MessagesRequest) -> ToolPolicy:
    tools = [ToolSpec(tool.name, tool.description, tool.input_schema) for tool in body.tools or []]
    choice = body.tool_choice
    parallel = choice is None or not choice.disable_parallel_tool_use
    if choice is None or choice.type == "auto":
        return ToolPolicy(tools, "auto", parallel=parallel)
    if choice.type == "none":
        return ToolPolicy(tools, "none")
    if choice.type == "tool":
        return ToolPolicy(tools, "required", forced=choice.name, parallel=parallel)
    return ToolPolicy(tools, "required", parallel=parallel)


def anthropic_turns(body: MessagesRequest, policy: ToolPolicy) -> list[ChatTurn]:
    turns = [ChatTurn("system", body.system_text())] if body.system_text() else []
    for item in body.messages:
        for block in item.blocks():
            if isinstance(block, TextBlockParam):
                turns.append(ChatTurn(item.role, block.text))
            elif isinstance(block, ToolResultBlockParam):
                error = bool(block.is_error)
                turns.append(_result(block.tool_use_id, block.text(), error, policy))
            else:
                call = TurnCall(block.id, block.name, json.dumps(block.input))
                turns.append(_assistant("", [call], policy))
    return settle_turns(turns, policy)


def _assistant(text: str, calls: list[TurnCall], policy: ToolPolicy) -> ChatTurn:
    """An assistant turn with its calls: kept for a native template, else written out."""
    if policy.native:
        return ChatTurn("assistant", text, tuple(calls))
    parts = [text] if text else []
    parts += [format_call(call.name, call.arguments) for call in calls]
    return ChatTurn("assistant", "\n".join(parts))


def _result(call_id: str, content: str, is_error: bool, policy: ToolPolicy) -> ChatTurn:
    """A tool's result: a ``tool`` turn for a native template, else a user turn."""
    if policy.native:
        return ChatTurn("tool", f"Error: {content}" if is_error else content, call_id=call_id)
    return ChatTurn("user", format_result(call_id, content, is_error=is_error))


def settle_turns(turns: list[ChatTurn], policy: ToolPolicy) -> list[ChatTurn]:
    """One leading system turn (with the tool instructions), then merged same-role turns
    (``tool`` turns stay apart, named after the call they answer)."""
    system = [turn.content for turn in turns if turn.role == "system" and turn.content]
    if policy.instructions():
        system.append(policy.instructions())
    settled = [ChatTurn("system", "\n\n".join(system))] if system else []
    names = {call.id: call.name for turn in turns for call in turn.calls}
    for turn in turns:
        if turn.role == "system":
            continue
        last = settled[-1] if settled else None
        if turn.role == "tool":
            settled.append(dataclasses.replace(turn, name=names.get(turn.call_id or "")))
        elif last is not None and last.role == turn.role:
            joined = (last.content and turn.content) or not policy.native
            content = (
                last.content + "\n\n" + turn.content if joined else last.content or turn.content
            )
            settled[-1] = ChatTurn(turn.role, content, last.calls + turn.calls)
        else:
            settled.append(turn)
    return settled
