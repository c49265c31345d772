"""config.yaml: every Truss field accepted, invalid configs refused naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kingpost.config import load_config, parse_config
from kingpost.errors import ConfigError

COMPAT = Path(__file__).resolve().parent / "models" / "truss_compat"

# Fields as Truss's own config reference documents them, set to non-default values.
TRUSS_CONFIG: dict[str, Any] = {
    "model_name": "everything",
    "description": "all fields",
    "model_metadata": {"example_model_input": {"x": 1}},
    "examples_filename": "examples.yaml",
    "data_dir": "data",
    "external_data": [{"url": "https://example.com/a.bin", "local_data_path": "a.bin"}],
    "external_package_dirs": ["../shared"],
    "python_version": "py310",
    "base_image": {
        "image": "python:3.10",
        "python_executable_path": "/usr/bin/python3",
        "docker_auth": {"auth_method": "GCP_SERVICE_ACCOUNT_JSON", "secret_name": "gcp"},
    },
    "requirements": ["numpy"],
    "system_packages": ["ffmpeg"],
    "environment_variables": {"A": "1"},
    "secrets": {"hf_access_token": None},
    "resources": {
        "cpu": "500m",
        "memory": "512Mi",
        "accelerator": "H100:2",
        "use_gpu": True,
        "node_count": 1,
        "instance_type": "H100:2x32",
    },
    "runtime": {
        "predict_concurrency": 8,
        "streaming_read_timeout": 30,
        "enable_tracing_data": True,
        "enable_debug_logs": True,
        "transport": {"kind": "websocket", "ping_interval_seconds": 10},
        "health_checks": {"restart_check_delay_seconds": 10, "startup_threshold_seconds": 600},
        "oidc": {"enabled": True},
        "remote_ssh": {"enabled": False},
        "egress_restrictions": {"fqdn_allow_list": ["huggingface.co"]},
        "truss_server_version_override": "0.9.100",
    },
    "build": {"model_server": "TrussServer", "arguments": {}, "secret_to_path_mapping": {}},
    "build_commands": ["echo hi"],
    "docker_server": None,
    "model_cache": [
        {"repo_id": "org/model", "revision": "main", "use_volume": True, "volume_folder": "m"}
    ],
    "weights": [{"source": "hf://org/other@main", "mount_location": "/models/other"}],
    "trt_llm": None,
    "training_checkpoints": None,
    "input_type": "Any",
    "model_framework": "custom",
    "model_type": "Model",
    "model_module_dir": "model",
    "model_class_filename": "model.py",
    "model_class_name": "Model",
    "bundled_packages_dir": "packages",
    "use_local_src": False,
    "cache_internal": [],
    "live_reload": False,
    "apply_library_patches": True,
    "spec_version": "2.0",
}


def refusal(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as refused:
        parse_config(data)
    return str(refused.value)


def test_every_truss_field_is_accepted() -> None:
    config = parse_config(TRUSS_CONFIG)
    assert config.runtime.predict_concurrency == 8
    assert config.runtime.transport.ping_interval_seconds == 10
    assert config.model_cache[0].volume_folder == "m"


def test_the_model_receives_every_field_including_unknown_ones() -> None:
    config = parse_config({**TRUSS_CONFIG, "my_own_setting": {"k": "v"}})
    seen = config.as_dict()
    assert seen["my_own_setting"] == {"k": "v"}
    assert seen["resources"]["accelerator"] == "H100:2"
    assert seen["model_metadata"] == {"example_model_input": {"x": 1}}


def test_build_and_platform_fields_are_listed_as_unused_locally() -> None:
    unused = parse_config(TRUSS_CONFIG).unused_locally()
    for field in ("base_image", "build", "build_commands", "python_version", "resources"):
        assert field in unused
    assert "system_packages" in unused
    assert "runtime.health_checks" in unused
    assert "runtime.egress_restrictions" in unused
    assert "runtime.predict_concurrency" not in unused
    assert parse_config({"model_name": "x"}).unused_locally() == []


def test_empty_yaml_values_mean_the_default() -> None:
    config = parse_config({"requirements": None, "secrets": None, "model_name": None})
    assert (config.requirements, config.secrets, config.model_name) == ([], {}, None)


def test_the_former_hf_cache_name_is_read_as_model_cache() -> None:
    config = parse_config({"hf_cache": [{"repo_id": "org/model"}]})
    assert config.model_cache[0].repo_id == "org/model"


def test_environment_values_become_strings_as_in_truss() -> None:
    config = parse_config({"environment_variables": {"N": 3, "ON": True, "OFF": False}})
    assert config.environment_variables == {"N": "3", "ON": "true", "OFF": "false"}


def test_an_unknown_runtime_key_is_refused_with_a_suggestion() -> None:
    message = refusal({"runtime": {"predict_concurency": 2}})
    assert "runtime.predict_concurency" in message
    assert "did you mean 'predict_concurrency'" in message


def test_an_unknown_transport_key_is_refused() -> None:
    message = refusal({"runtime": {"transport": {"kind": "websocket", "ping_every": 1}}})
    assert "runtime.transport.ping_every" in message


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"runtime": {"predict_concurrency": "many"}}, "runtime.predict_concurrency"),
        ({"runtime": {"predict_concurrency": 0}}, "runtime.predict_concurrency"),
        ({"runtime": {"streaming_read_timeout": -1}}, "runtime.streaming_read_timeout"),
        ({"secrets": ["a", "b"]}, "secrets"),
        ({"requirements": "numpy"}, "requirements"),
        ({"environment_variables": ["A=1"]}, "environment_variables"),
        ({"model_cache": [{"revision": "main"}]}, "model_cache.0.repo_id"),
        ({"resources": {"use_gpu": "sometimes"}}, "resources.use_gpu"),
        ({"runtime": {"num_workers": 2}}, "runtime.num_workers"),
    ],
)
def test_a_wrong_type_is_refused_naming_the_field(data: dict[str, Any], field: str) -> None:
    assert f"'{field}'" in refusal(data)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"requirements": ["a"], "requirements_file": "r.txt"}, "requirements_file"),
        ({"runtime": {"transport": {"kind": "grpc"}}}, "grpc"),
        (
            {"runtime": {"is_websocket_endpoint": False, "transport": {"kind": "websocket"}}},
            "is_websocket_endpoint",
        ),
        ({"model_cache": [{"repo_id": "a", "use_volume": True}]}, "volume_folder"),
        (
            {
                "model_cache": [
                    {"repo_id": "a", "use_volume": True, "volume_folder": "a"},
                    {"repo_id": "b", "use_volume": False},
                ]
            },
            "use_volume",
        ),
        ({"weights": [{"source": "org/model", "mount_location": "/w"}]}, "scheme"),
        ({"weights": [{"source": "hf://org/model", "mount_location": "w"}]}, "absolute"),
        (
            {
                "weights": [
                    {"source": "hf://a/b", "mount_location": "/w"},
                    {"source": "hf://c/d", "mount_location": "/w"},
                ]
            },
            "mount_location",
        ),
    ],
)
def test_contradicting_fields_are_refused(data: dict[str, Any], named: str) -> None:
    assert named in refusal(data)


def test_the_legacy_websocket_flag_selects_the_websocket_transport() -> None:
    config = parse_config({"runtime": {"is_websocket_endpoint": True}})
    assert config.runtime.transport.kind == "websocket"


def test_invalid_yaml_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("model_name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config\.yaml"):
        load_config(tmp_path)


def test_the_compat_config_files_all_parse() -> None:
    configs = sorted(COMPAT.glob("*/config.yaml"))
    models = sorted(COMPAT.glob("*/model"))
    assert models, f"no Truss compat models under {COMPAT}"
    # every compat model directory has its config.yaml, so none is skipped unseen
    assert [path.parent for path in configs] == [path.parent for path in models]
    for path in configs:
        parse_config(yaml.safe_load(path.read_text()))


def test_serve_refuses_an_invalid_config_before_importing_the_model(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text("raise SystemExit('imported')\n")
    (tmp_path / "config.yaml").write_text("runtime:\n  predict_concurrency: lots\n")
    result = subprocess.run(
        [sys.executable, "-m", "kingpost", "serve", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "runtime.predict_concurrency" in result.stderr
    assert "imported" not in result.stderr
