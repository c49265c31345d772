"""Chat templates for GGUF models: the GGUF's own (Jinja), or a llama.cpp built-in.

The GGUF's ``tokenizer.chat_template`` is rendered with Jinja, as the model's
authors wrote it. ``engine.chat_format`` names one of llama.cpp's built-in formats
(``gemma``, ``chatml``, ``llama3``...) instead. A GGUF without a template (a base
model, say) gets its family's turn format, picked from ``general.architecture``;
only a family with no known format has no chat (completions and embeddings work).

A Jinja template that renders tools itself (Qwen's, Llama 3.1's, Mistral's...) also gets
the request's tools, earlier calls and tool results, in the shape it was written for;
:func:`kingpost.engines.tool_calls.syntax_for_template` names the family's call markers.
"""

from __future__ import annotations

import ctypes
import json
import logging
from typing import Any, Protocol

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from kingpost.engines.generation import ChatTurn
from kingpost.engines.tool_calls import ToolSyntax, syntax_for_template, template_handles_tools
from kingpost.errors import ConfigError
from kingpost.protocols import InvalidParameterError

logger = logging.getLogger("kingpost.engines.llama_cpp")

# general.architecture -> the llama.cpp built-in turn format that family was tuned on.
ARCHITECTURE_FORMATS: dict[str, str] = {
    **dict.fromkeys(("gemma", "gemma2", "gemma3", "gemma3n", "gemma-embedding"), "gemma"),
    "llama": "llama3",
    "llama4": "llama4",
    **dict.fromkeys(
        ("qwen", "qwen2", "qwen2moe", "qwen2vl", "qwen3", "qwen3moe", "qwen3next", "qwen3vl"),
        "chatml",
    ),
    **dict.fromkeys(("qwen3vlmoe", "smollm3", "olmo2", "internlm2", "lfm2"), "chatml"),
    **dict.fromkeys(("phi3", "phimoe"), "phi3"),
    **dict.fromkeys(("command-r", "cohere2"), "command-r"),
    "deepseek": "deepseek",
    "deepseek2": "deepseek3",
    **dict.fromkeys(("chatglm", "glm4"), "chatglm4"),
    **dict.fromkeys(("granite", "granitemoe"), "granite"),
    "granitehybrid": "granite-4.0",
    "exaone": "exaone3",
    "exaone4": "exaone4",
    "exaone-moe": "exaone-moe",
    **dict.fromkeys(("minicpm", "minicpm3"), "minicpm"),
    "orion": "orion",
    "gpt-oss": "gpt-oss",
    "hunyuan-moe": "hunyuan-moe",
    "hunyuan-dense": "hunyuan-dense",
    "seed_oss": "seed_oss",
    **dict.fromkeys(("bailingmoe", "bailingmoe2"), "bailing"),
    "grok": "grok-2",
    "falcon": "falcon3",
    "rwkv6": "rwkv-world",
    "rwkv7": "rwkv-world",
    "pangu-embedded": "pangu-embedded",
    "mistral3": "mistral-v7-tekken",
}


class ChatTemplate(Protocol):
    def render(
        self,
        turns: list[ChatTurn],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """The prompt for a conversation, ending where the assistant's reply begins
        (or, with ``add_generation_prompt=False``, after the last turn, closed); ``tools``
        (OpenAI's shape) reach a template that renders them, others ignore them."""
        ...


class BuiltinChatTemplate:
    """One of llama.cpp's built-in chat formats, by name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def render(
        self,
        turns: list[ChatTurn],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        messages = (llama_cpp.llama_chat_message * len(turns))()
        encoded = [(turn.role.encode(), turn.content.encode()) for turn in turns]
        for message, (role, content) in zip(messages, encoded, strict=True):
            message.role, message.content = role, content  # `encoded` keeps the bytes alive
        size = 2 * sum(len(content) for _, content in encoded) + 256
        while True:
            buffer = ctypes.create_string_buffer(size)
            written = llama_cpp.llama_chat_apply_template(
                self.name.encode(), messages, len(turns), add_generation_prompt, buffer, size
            )
            if written < 0:
                raise InvalidParameterError(
                    "messages", f"the {self.name!r} chat template cannot render them"
                )
            if written <= size:
                return buffer.raw[:written].decode("utf-8", "replace")
            size = written


class JinjaChatTemplate:
    """The Jinja chat template a GGUF carries in its metadata."""

    def __init__(self, template: str, *, bos_token: str, eos_token: str) -> None:
        self.source = template
        self._formatters = {
            add: Jinja2ChatFormatter(
                template, eos_token=eos_token, bos_token=bos_token, add_generation_prompt=add
            )
            for add in (True, False)
        }
        self.arguments_as_object = self._takes_object_arguments()

    def render(
        self,
        turns: list[ChatTurn],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        messages: Any = [self._message(turn) for turn in turns]
        try:
            formatter = self._formatters[add_generation_prompt]
            listed: Any = tools or None
            return str(formatter(messages=messages, tools=listed).prompt)
        except ValueError as error:  # templates raise_exception() on what they refuse
            raise InvalidParameterError("messages", str(error)) from None

    def _message(self, turn: ChatTurn) -> dict[str, Any]:
        message: dict[str, Any] = {"role": turn.role, "content": turn.content}
        if turn.calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": self._arguments(call.arguments)},
                }
                for call in turn.calls
            ]
        if turn.role == "tool":
            message["tool_call_id"] = turn.call_id
            if turn.name:
                message["name"] = turn.name
        return message

    def _arguments(self, arguments: str) -> Any:
        if not self.arguments_as_object:
            return arguments
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments

    def _takes_object_arguments(self) -> bool:
        """Whether the template writes a call's arguments given as an object as JSON (most
        ``tojson`` them, as Hugging Face passes them); else they are passed as text."""
        probe = {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL]}
        messages: Any = [{"role": "user", "content": "hi"}, probe]
        try:
            rendered = str(self._formatters[False](messages=messages).prompt)
        except Exception:  # a template that refuses the probe: keep objects
            return True
        return '"probe_key"' in rendered or "'probe_key'" not in rendered


_PROBE_CALL = {
    "id": "call_probe",
    "type": "function",
    "function": {"name": "probe_tool", "arguments": {"probe_key": "probe value"}},
}


def continue_final_turn(template: ChatTemplate, turns: list[ChatTurn]) -> str:
    """The prompt that continues the last (assistant) turn in place, not after it.

    The conversation is rendered with that turn closed and cut right after its text,
    so that whatever the template writes around a reply stays as the model knows it;
    a template that rewrites the text falls back to a fresh reply opened on it.
    """
    closed = template.render(turns, add_generation_prompt=False)
    content = turns[-1].content
    for text in (content, content.strip()):
        at = closed.rfind(text) if text else -1
        if at >= 0:
            return closed[: at + len(text)]
    return template.render(turns[:-1]) + content


def builtin_template_names() -> list[str]:
    names = (ctypes.c_char_p * 256)()
    count = llama_cpp.llama_chat_builtin_templates(names, 256)
    return sorted(name.decode() for name in names[:count] if name)


class NoChatTemplate:
    """Chat for a GGUF with no template and an architecture with no known turn format."""

    def __init__(self, architecture: str) -> None:
        self.architecture = architecture

    def render(
        self,
        turns: list[ChatTurn],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        raise InvalidParameterError(
            "messages",
            f"this model has no chat template and its architecture ({self.architecture}) "
            "has no known turn format; use /v1/completions, or set engine.chat_format to "
            f"one of: {', '.join(builtin_template_names())}",
        )


def chat_template(model: Any, vocab: Any, chat_format: str | None) -> ChatTemplate:
    """The template named by ``engine.chat_format``, else the GGUF's, else its family's."""
    if chat_format is not None:
        known = builtin_template_names()
        if chat_format not in known:
            listed = ", ".join(known)
            raise ConfigError(f"engine.chat_format: unknown {chat_format!r} (known: {listed})")
        return BuiltinChatTemplate(chat_format)
    template = llama_cpp.llama_model_chat_template(model, None)
    if not template:
        return architecture_template(model_metadata(model, "general.architecture") or "unknown")
    return JinjaChatTemplate(
        template.decode(),
        bos_token=_token_text(vocab, llama_cpp.llama_vocab_bos(vocab)),
        eos_token=_token_text(vocab, llama_cpp.llama_vocab_eos(vocab)),
    )


def native_tool_syntax(template: ChatTemplate) -> ToolSyntax | None:
    """The call markers of a GGUF template that renders tools itself (logged), or None."""
    if not isinstance(template, JinjaChatTemplate):
        return None
    syntax = syntax_for_template(template.source)
    if syntax is not None:
        logger.info("the chat template renders tools: calls are read in the %r format", syntax.name)
    elif template_handles_tools(template.source):
        logger.info(
            "the chat template renders tools in a format not read here: tools are "
            "described in the prompt instead"
        )
    return syntax


def architecture_template(architecture: str) -> ChatTemplate:
    """The turn format of a model family whose GGUF carries no chat template."""
    name = ARCHITECTURE_FORMATS.get(architecture)
    if name is None or name not in builtin_template_names():
        logger.warning(
            "this GGUF has no chat template and architecture %r has no known turn format: "
            "chat routes answer 400 (set engine.chat_format to one of: %s); "
            "completions and embeddings work",
            architecture,
            ", ".join(builtin_template_names()),
        )
        return NoChatTemplate(architecture)
    logger.info(
        "this GGUF has no chat template: using llama.cpp's %r turns for architecture %r "
        "(engine.chat_format picks another)",
        name,
        architecture,
    )
    return BuiltinChatTemplate(name)


def model_metadata(model: Any, key: str) -> str | None:
    """A GGUF metadata value as text (``general.architecture``...), None when absent."""
    buffer = ctypes.create_string_buffer(512)
    size = llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, 512)
    if size < 0:
        return None
    return buffer.value.decode("utf-8", "replace")


def _token_text(vocab: Any, token: int) -> str:
    buffer = ctypes.create_string_buffer(256)
    size = llama_cpp.llama_token_to_piece(vocab, token, buffer, 256, 0, True)
    return buffer.raw[: max(size, 0)].decode("utf-8", "replace")
