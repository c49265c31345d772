"""Each API's conversation, reduced to plain chat turns and a tool policy.

System prompts come in three forms (OpenAI ``system``/``developer`` messages, the
Responses ``instructions``, Anthropic's top-level ``system``); tool calls and tool
results in three more. All become :class:`ChatTurn` lists that any chat template
renders: one leading system turn, then alternating user/assistant turns.
"""

from __future__ import annotations

from kingpost.engines.generation import ChatTurn
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
    if isinstance(choice, NamedToolChoice):
        return ToolPolicy(tools, "required", forced=choice.function.name)
    return ToolPolicy(tools, choice or "auto")


def chat_turns(body: ChatCompletionRequest, policy: ToolPolicy) -> list[ChatTurn]:
    turns: list[ChatTurn] = []
    for item in body.messages:
        if item.role in ("system", "developer"):
            turns.append(ChatTurn("system", item.text()))
        elif item.role == "user":
            turns.append(ChatTurn("user", item.text()))
        elif item.role == "assistant":
            parts = [item.text()] if item.text() else []
            parts += [
                format_call(call.function.name, call.function.arguments)
                for call in item.tool_calls or []
            ]
            turns.append(ChatTurn("assistant", "\n".join(parts)))
        else:
            turns.append(ChatTurn("user", format_result(item.tool_call_id or "", item.text())))
    return settle_turns(turns, policy)


def responses_tool_policy(body: ResponsesRequest) -> ToolPolicy:
    tools = [
        ToolSpec(tool.name, tool.description, tool.parameters or {"type": "object"})
        for tool in body.tools or []
    ]
    choice = body.tool_choice
    if isinstance(choice, NamedFunctionChoice):
        return ToolPolicy(tools, "required", forced=choice.name)
    return ToolPolicy(tools, choice or "auto")


def responses_turns(body: ResponsesRequest, policy: ToolPolicy) -> list[ChatTurn]:
    turns = [ChatTurn("system", body.instructions)] if body.instructions else []
    for item in body.input_items():
        if isinstance(item, FunctionCallItem):
            turns.append(ChatTurn("assistant", format_call(item.name, item.arguments)))
        elif isinstance(item, FunctionCallOutputItem):
            turns.append(ChatTurn("user", format_result(item.call_id, item.text())))
        elif item.role in ("system", "developer"):
            turns.append(ChatTurn("system", item.text()))
        else:
            turns.append(ChatTurn("assistant" if item.role == "assistant" else "user", item.text()))
    return settle_turns(turns, policy)


def anthropic_tool_policy(body: MessagesRequest) -> ToolPolicy:
    tools = [ToolSpec(tool.name, tool.description, tool.input_schema) for tool in body.tools or []]
    choice = body.tool_choice
    if choice is None or choice.type == "auto":
        return ToolPolicy(tools, "auto")
    if choice.type == "none":
        return ToolPolicy(tools, "none")
    if choice.type == "tool":
        return ToolPolicy(tools, "required", forced=choice.name)
    return ToolPolicy(tools, "required")


def anthropic_turns(body: MessagesRequest, policy: ToolPolicy) -> list[ChatTurn]:
    turns = [ChatTurn("system", body.system_text())] if body.system_text() else []
    for item in body.messages:
        for block in item.blocks():
            if isinstance(block, TextBlockParam):
                turns.append(ChatTurn(item.role, block.text))
            elif isinstance(block, ToolResultBlockParam):
                result = format_result(
                    block.tool_use_id, block.text(), is_error=bool(block.is_error)
                )
                turns.append(ChatTurn("user", result))
            else:
                turns.append(ChatTurn("assistant", format_call(block.name, block.input)))
    return settle_turns(turns, policy)


def settle_turns(turns: list[ChatTurn], policy: ToolPolicy) -> list[ChatTurn]:
    """One leading system turn (with the tool instructions), then merged same-role turns."""
    system = [turn.content for turn in turns if turn.role == "system" and turn.content]
    if policy.instructions():
        system.append(policy.instructions())
    settled = [ChatTurn("system", "\n\n".join(system))] if system else []
    for turn in turns:
        if turn.role == "system":
            continue
        if settled and settled[-1].role == turn.role:
            settled[-1] = ChatTurn(turn.role, settled[-1].content + "\n\n" + turn.content)
        else:
            settled.append(turn)
    return settled
