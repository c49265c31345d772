"""Chat templates: llama.cpp built-ins by name, and a GGUF's own Jinja template."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install 'kingpost[llama]'"
)

from kingpost.engines.generation import ChatTurn
from kingpost.engines.llama_cpp_templates import (
    BuiltinChatTemplate,
    JinjaChatTemplate,
    builtin_template_names,
)
from kingpost.protocols import InvalidParameterError

TURNS = [ChatTurn("system", "Be brief."), ChatTurn("user", "Hi")]


def test_gemma_turns_fold_the_system_prompt_into_the_first_user_turn() -> None:
    prompt = BuiltinChatTemplate("gemma").render(TURNS)
    assert prompt == "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_chatml_keeps_a_system_turn() -> None:
    prompt = BuiltinChatTemplate("chatml").render(TURNS)
    assert "<|im_start|>system\nBe brief.<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_builtin_names_include_the_common_formats() -> None:
    assert {"gemma", "chatml", "llama3"} <= set(builtin_template_names())


def test_a_gguf_jinja_template_renders_with_its_special_tokens() -> None:
    template = JinjaChatTemplate(
        "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}",
        bos_token="<s>",
        eos_token="</s>",
    )
    assert template.render(TURNS) == "<s>[system]Be brief.[user]Hi[assistant]"


def test_a_template_refusing_the_conversation_is_a_bad_request() -> None:
    template = JinjaChatTemplate(
        "{% if messages[0].role == 'system' %}{{ raise_exception('no system turns') }}{% endif %}",
        bos_token="",
        eos_token="",
    )
    with pytest.raises(InvalidParameterError, match="no system turns"):
        template.render(TURNS)
