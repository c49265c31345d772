"""The five /v1 routes through the official OpenAI and Anthropic SDKs.

Every call runs through both the plain base URL and the hosted platform's
``/environments/production/sync`` one, stream and non-stream.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from kingpost.testing import InProcessServer
from tests.conftest import EXAMPLES

PREFIXES = ["", "/environments/production/sync"]


@pytest.fixture(scope="module")
def server() -> Iterator[InProcessServer]:
    with InProcessServer(EXAMPLES / "openai-compatible") as server:
        yield server


@pytest.fixture(params=PREFIXES, ids=["plain", "platform"])
def openai_client(request: pytest.FixtureRequest, server: InProcessServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.url(request.param + "/v1"), api_key="unused", http_client=server.sdk_client
    )


@pytest.fixture(params=PREFIXES, ids=["plain", "platform"])
def anthropic_client(
    request: pytest.FixtureRequest, server: InProcessServer
) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=server.url(request.param), api_key="unused", http_client=server.sdk_client
    )


def test_chat_completion(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(
        model="parrot", messages=[{"role": "user", "content": "hi there"}]
    )
    assert reply.choices[0].message.content == "You said: hi there "
    assert reply.choices[0].finish_reason == "stop"


def test_chat_completion_stream(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model="parrot",
        messages=[{"role": "user", "content": "hi there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: hi there "
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_completion(openai_client: openai.OpenAI) -> None:
    reply = openai_client.completions.create(model="parrot", prompt="say this")
    assert reply.choices[0].text == "You said: say this "


def test_completion_stream(openai_client: openai.OpenAI) -> None:
    stream = openai_client.completions.create(model="parrot", prompt="say this", stream=True)
    assert "".join(c.choices[0].text for c in stream) == "You said: say this "


def test_embeddings(openai_client: openai.OpenAI) -> None:
    reply = openai_client.embeddings.create(
        model="parrot", input=["a", "b"], encoding_format="float"
    )
    assert [d.index for d in reply.data] == [0, 1]
    assert len(reply.data[0].embedding) == 8
    assert reply.data[0].embedding != reply.data[1].embedding


def test_embeddings_through_the_sdk_default_encoding(openai_client: openai.OpenAI) -> None:
    # The SDK asks for base64 by default and decodes it when the server answers floats.
    reply = openai_client.embeddings.create(model="parrot", input="a")
    assert len(reply.data[0].embedding) == 8


def test_responses(openai_client: openai.OpenAI) -> None:
    reply = openai_client.responses.create(model="parrot", input="tell me")
    assert reply.output_text == "You said: tell me "


def test_responses_stream(openai_client: openai.OpenAI) -> None:
    stream = openai_client.responses.create(model="parrot", input="tell me", stream=True)
    events = list(stream)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "You said: tell me "
    assert events[-1].type == "response.completed"


def test_messages(anthropic_client: anthropic.Anthropic) -> None:
    reply = anthropic_client.messages.create(
        model="parrot", max_tokens=50, messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "You said: hello "
    assert reply.stop_reason == "end_turn"


def test_messages_stream(anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.stream(
        model="parrot", max_tokens=50, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "You said: hello "
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3


def test_models_lists_the_served_model(openai_client: openai.OpenAI) -> None:
    assert [m.id for m in openai_client.models.list()] == ["parrot"]
