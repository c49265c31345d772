"""Chat templates for GGUF models: the GGUF's own (Jinja), or a llama.cpp built-in.

The GGUF's ``tokenizer.chat_template`` is rendered with Jinja, as the model's
authors wrote it. A model without one (a base model, say) names one of llama.cpp's
built-in formats with ``engine.chat_format`` (``gemma``, ``chatml``, ``llama3``...).
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from kingpost.engines.generation import ChatTurn
from kingpost.errors import ConfigError
from kingpost.protocols import InvalidParameterError


class ChatTemplate(Protocol):
    def render(self, turns: list[ChatTurn]) -> str:
        """The prompt for a conversation, ending where the assistant's reply begins."""
        ...


class BuiltinChatTemplate:
    """One of llama.cpp's built-in chat formats, by name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def render(self, turns: list[ChatTurn]) -> str:
        messages = (llama_cpp.llama_chat_message * len(turns))()
        encoded = [(turn.role.encode(), turn.content.encode()) for turn in turns]
        for message, (role, content) in zip(messages, encoded, strict=True):
            message.role, message.content = role, content  # `encoded` keeps the bytes alive
        size = 2 * sum(len(content) for _, content in encoded) + 256
        while True:
            buffer = ctypes.create_string_buffer(size)
            written = llama_cpp.llama_chat_apply_template(
                self.name.encode(), messages, len(turns), True, buffer, size
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
        self._formatter = Jinja2ChatFormatter(template, eos_token=eos_token, bos_token=bos_token)

    def render(self, turns: list[ChatTurn]) -> str:
        messages: Any = [{"role": turn.role, "content": turn.content} for turn in turns]
        try:
            return str(self._formatter(messages=messages).prompt)
        except ValueError as error:  # templates raise_exception() on what they refuse
            raise InvalidParameterError("messages", str(error)) from None


def builtin_template_names() -> list[str]:
    names = (ctypes.c_char_p * 256)()
    count = llama_cpp.llama_chat_builtin_templates(names, 256)
    return sorted(name.decode() for name in names[:count] if name)


def chat_template(model: Any, vocab: Any, chat_format: str | None) -> ChatTemplate:
    """The template named by ``engine.chat_format``, else the GGUF's; ConfigError if neither."""
    if chat_format is not None:
        known = builtin_template_names()
        if chat_format not in known:
            listed = ", ".join(known)
            raise ConfigError(f"engine.chat_format: unknown {chat_format!r} (known: {listed})")
        return BuiltinChatTemplate(chat_format)
    template = llama_cpp.llama_model_chat_template(model, None)
    if not template:
        raise ConfigError(
            "engine.chat_format: this GGUF has no chat template; name a built-in one "
            f"({', '.join(builtin_template_names())})"
        )
    return JinjaChatTemplate(
        template.decode(),
        bos_token=_token_text(vocab, llama_cpp.llama_vocab_bos(vocab)),
        eos_token=_token_text(vocab, llama_cpp.llama_vocab_eos(vocab)),
    )


def _token_text(vocab: Any, token: int) -> str:
    buffer = ctypes.create_string_buffer(256)
    size = llama_cpp.llama_token_to_piece(vocab, token, buffer, 256, 0, True)
    return buffer.raw[: max(size, 0)].decode("utf-8", "replace")
