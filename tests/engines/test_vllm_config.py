"""The vLLM engine without a GPU: its config, its translations, and the missing-vllm error."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from kingpost.engines import engine_model_class
from kingpost.engines.generation import SamplingParams
from kingpost.engines.vllm import (
    VLLMModel,
    delta_tokens,
    engine_arguments,
    parse_engine_config,
    resolve_model_source,
    sampling_arguments,
    token_logprob,
)
from kingpost.errors import ConfigError, ModelLoadError
from kingpost.testing import ServerProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vllm-chat"
VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None
ENGINE_FIELDS = {
    "model",
    "tokenizer",
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "dtype",
    "enforce_eager",
    "trust_remote_code",
    "max_model_len",
    "max_num_seqs",
    "enable_log_requests",
    "swap_space",
}


def config(**engine: object) -> dict:
    return {"model_name": "m", "engine": {"kind": "vllm", "model": "org/name", **engine}}


# ---- the engine block ------------------------------------------------------------------


def test_the_registry_serves_vllm_with_this_class() -> None:
    assert engine_model_class("vllm") is VLLMModel


def test_defaults_leave_length_and_concurrency_to_vllm() -> None:
    settings = parse_engine_config(config())
    assert settings.context_length is None and settings.max_concurrent_sequences is None
    assert settings.tensor_parallel_size == 1 and settings.default_top_k == 0


def test_constructing_does_not_load_anything() -> None:
    model = VLLMModel(config(context_length=512))
    assert model.context_length == 512 and model.served_model_name == "m"


def test_the_example_config_is_valid() -> None:
    import yaml

    example = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    assert parse_engine_config(example).model == "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.mark.parametrize(
    ("engine", "field"),
    [
        ({"context_length": 0}, "engine.context_length"),
        ({"max_concurrent_sequences": "many"}, "engine.max_concurrent_sequences"),
        ({"gpu_memory_utilization": 1.5}, "engine.gpu_memory_utilization"),
        ({"dtype": "float8"}, "engine.dtype"),
        ({"tensor_paralel_size": 2}, "engine.tensor_paralel_size"),
        ({"model": ""}, "engine.model"),
    ],
)
def test_invalid_settings_name_the_field(engine: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        parse_engine_config(config(**engine))


# ---- finding the weights ------------------------------------------------------------------


def test_a_model_directory_is_found_relative_to_the_model_dir(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    assert resolve_model_source("weights", tmp_path) == tmp_path / "weights"


def test_a_missing_directory_names_the_path_tried(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"engine.model: no model directory at {tmp_path}/w"):
        resolve_model_source("./w", tmp_path)


def test_a_repo_id_resolves_to_its_snapshot_in_the_local_cache(tmp_path: Path) -> None:
    repo = tmp_path / "models--acme--tiny"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    assert resolve_model_source("acme/tiny", None, cache_dir=tmp_path) == snapshot


def test_a_repo_id_missing_from_the_cache_says_how_to_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hf download acme/absent"):
        resolve_model_source("acme/absent", tmp_path, cache_dir=tmp_path / "cache")


# ---- translating to vLLM ------------------------------------------------------------------


def test_sampling_settings_become_vllm_keyword_arguments() -> None:
    params = SamplingParams(
        max_tokens=32,
        temperature=0.5,
        top_p=0.9,
        top_k=20,
        seed=7,
        presence_penalty=0.25,
        frequency_penalty=1.5,
        logprobs=True,
        top_logprobs=3,
    )
    assert sampling_arguments(params) == {
        "n": 1,
        "max_tokens": 32,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 20,
        "seed": 7,
        "presence_penalty": 0.25,
        "frequency_penalty": 1.5,
        "logprobs": 3,
    }


def test_no_top_k_stays_zero_which_vllm_reads_as_off() -> None:
    assert sampling_arguments(SamplingParams(max_tokens=4, top_k=0))["top_k"] == 0


def test_logprobs_off_asks_vllm_for_none() -> None:
    assert sampling_arguments(SamplingParams(max_tokens=4, top_logprobs=5))["logprobs"] is None


def test_logprobs_without_alternatives_ask_for_the_sampled_token_only() -> None:
    assert sampling_arguments(SamplingParams(max_tokens=4, logprobs=True))["logprobs"] == 0


@dataclass
class Candidate:
    """The shape of one entry of vLLM's per-token logprob dict."""

    logprob: float
    rank: int | None
    decoded_token: str | None


def test_the_sampled_token_and_its_best_alternatives_in_rank_order() -> None:
    candidates = {
        5: Candidate(-2.0, 3, " dog"),
        1: Candidate(-0.5, 1, " cat"),
        9: Candidate(-1.0, 2, " cow"),
    }
    logprob = token_logprob(5, candidates, top=2)
    assert (logprob.token, logprob.logprob, logprob.bytes) == (" dog", -2.0, list(b" dog"))
    assert [top.token for top in logprob.top_logprobs] == [" cat", " cow"]


def test_a_step_s_text_rides_on_its_first_token() -> None:
    tokens = delta_tokens([3, 4], "hello", None, SamplingParams(max_tokens=4))
    assert [token.text for token in tokens] == ["hello", ""]
    assert all(token.logprob is None for token in tokens)


def test_each_token_of_a_step_gets_its_own_logprob() -> None:
    params = SamplingParams(max_tokens=4, logprobs=True, top_logprobs=1)
    steps = [{3: Candidate(-0.1, 1, "he")}, {4: Candidate(-0.2, 1, "llo")}]
    tokens = delta_tokens([3, 4], "hello", steps, params)
    assert [token.logprob.token for token in tokens if token.logprob] == ["he", "llo"]


def test_text_released_without_a_new_token_is_not_lost() -> None:
    tokens = delta_tokens([], "!", None, SamplingParams(max_tokens=4))
    assert [token.text for token in tokens] == ["!"]


def test_engine_arguments_map_kingpost_names_to_vllm_names(tmp_path: Path) -> None:
    settings = parse_engine_config(config(context_length=2048, max_concurrent_sequences=16))
    arguments = engine_arguments(settings, tmp_path, accepted=ENGINE_FIELDS)
    assert arguments["model"] == arguments["tokenizer"] == str(tmp_path)
    assert arguments["max_model_len"] == 2048 and arguments["max_num_seqs"] == 16
    assert arguments["enable_log_requests"] is False


def test_unset_limits_are_left_to_vllm(tmp_path: Path) -> None:
    arguments = engine_arguments(parse_engine_config(config()), tmp_path, accepted=ENGINE_FIELDS)
    assert "max_model_len" not in arguments and "max_num_seqs" not in arguments


def test_extra_engine_args_pass_through(tmp_path: Path) -> None:
    settings = parse_engine_config(config(engine_args={"swap_space": 8}))
    assert engine_arguments(settings, tmp_path, accepted=ENGINE_FIELDS)["swap_space"] == 8


def test_an_engine_arg_this_vllm_lacks_is_named(tmp_path: Path) -> None:
    settings = parse_engine_config(config(engine_args={"warp_speed": True}))
    with pytest.raises(ConfigError, match=r"^engine\.engine_args\.warp_speed: "):
        engine_arguments(settings, tmp_path, accepted=ENGINE_FIELDS)


# ---- without vllm -------------------------------------------------------------------------


@pytest.mark.skipif(VLLM_INSTALLED, reason="vllm is installed here")
def test_loading_without_vllm_says_how_to_install_it(tmp_path: Path) -> None:
    model = VLLMModel(config(model=str(tmp_path)))
    with pytest.raises(ModelLoadError, match=r"pip install 'kingpost\[vllm\]'"):
        model.load()


@pytest.mark.skipif(VLLM_INSTALLED, reason="vllm is installed here")
def test_serving_without_vllm_exits_with_the_install_hint(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "config.yaml").write_text(
        "model_name: m\nengine:\n  kind: vllm\n  model: weights\n"
    )
    with pytest.raises(RuntimeError) as caught:
        start_server(tmp_path, startup_timeout=30)
    assert "pip install 'kingpost[vllm]'" in str(caught.value)


def test_serving_a_missing_model_directory_exits_naming_it(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    (tmp_path / "config.yaml").write_text(
        "model_name: m\nengine:\n  kind: vllm\n  model: ./weights/absent\n"
    )
    with pytest.raises(RuntimeError) as caught:
        start_server(tmp_path, startup_timeout=30)
    assert str(tmp_path / "weights" / "absent") in str(caught.value)
