"""A GGUF without a chat template chats in its family's turns, picked by architecture."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install 'kingpost[llama]'"
)

from kingpost.engines.generation import ChatTurn
from kingpost.engines.llama_cpp_templates import (
    ARCHITECTURE_FORMATS,
    BuiltinChatTemplate,
    NoChatTemplate,
    architecture_template,
    builtin_template_names,
    continue_final_turn,
)
from kingpost.protocols import InvalidParameterError

TURNS = [ChatTurn("user", "Hi")]


@pytest.mark.parametrize(
    ("architecture", "turns"), [("gemma3", "gemma"), ("llama", "llama3"), ("qwen2", "chatml")]
)
def test_known_families_get_their_turns(
    architecture: str, turns: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="kingpost.engines.llama_cpp"):
        template = architecture_template(architecture)
    assert isinstance(template, BuiltinChatTemplate) and template.name == turns
    assert f"{turns!r} turns for architecture {architecture!r}" in caplog.text


def test_every_mapped_format_is_one_llama_cpp_has() -> None:
    assert set(ARCHITECTURE_FORMATS.values()) <= set(builtin_template_names())


def test_an_unknown_family_refuses_chat_naming_the_formats() -> None:
    template = architecture_template("no-such-arch")
    assert isinstance(template, NoChatTemplate)
    with pytest.raises(InvalidParameterError, match=r"no-such-arch.*chatml"):
        template.render(TURNS)


def test_a_final_assistant_turn_is_continued_not_closed() -> None:
    turns = [*TURNS, ChatTurn("assistant", '{"name": "')]
    prompt = continue_final_turn(BuiltinChatTemplate("chatml"), turns)
    assert prompt.endswith('<|im_start|>assistant\n{"name": "')
