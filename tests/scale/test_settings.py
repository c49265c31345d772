"""config.yaml and the platform's replica settings -> Ray Serve deployment options.

Pure mapping (PLATFORM.md's table): no Ray needed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from kingpost.config import ModelConfig
from kingpost.errors import ConfigError
from kingpost.scale import Scaling, actor_options, deployment_options
from kingpost.scale.settings import cpu_count, memory_bytes
from tests.conftest import EXAMPLES


def config(**fields: object) -> ModelConfig:
    return ModelConfig.model_validate(fields)


def test_predict_concurrency_is_max_ongoing_requests() -> None:
    options = deployment_options(config(runtime={"predict_concurrency": 7}), Scaling.fixed(2))
    assert options["max_ongoing_requests"] == 7
    assert options["num_replicas"] == 2
    assert "autoscaling_config" not in options


def test_resources_become_actor_options() -> None:
    resources = config(resources={"cpu": "500m", "memory": "512Mi", "use_gpu": True}).resources
    assert actor_options(resources) == {"num_cpus": 0.5, "memory": 512 * 2**20, "num_gpus": 1.0}


@pytest.mark.parametrize(
    ("accelerator", "expected"),
    [
        ("H100:2", {"num_gpus": 2.0, "accelerator_type": "H100"}),
        ("A10G", {"num_gpus": 1.0, "accelerator_type": "A10G"}),
        ({"type": "L4", "count": 4}, {"num_gpus": 4.0, "accelerator_type": "L4"}),
    ],
)
def test_an_accelerator_names_the_gpu_type_and_count(
    accelerator: object, expected: dict[str, object]
) -> None:
    options = actor_options(config(resources={"accelerator": accelerator}).resources)
    assert {k: options[k] for k in expected} == expected


def test_the_default_resources_ask_for_one_cpu_and_no_gpu() -> None:
    assert actor_options(config().resources) == {"num_cpus": 1.0, "memory": 2 * 2**30}


def test_autoscaling_maps_as_the_platform_table_says() -> None:
    scaling = Scaling(
        min_replica=0,
        max_replica=4,
        autoscaling_window=30,
        scale_down_delay=120,
        concurrency_target=4,
        target_utilization_percentage=50,
    )
    autoscaling = deployment_options(config(), scaling)["autoscaling_config"]
    assert autoscaling == {
        "min_replicas": 0,
        "initial_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 2.0,
        "look_back_period_s": 30,
        "downscale_delay_s": 120,
        "downscale_to_zero_delay_s": 120,
        "upscale_delay_s": 0.0,
    }


def test_the_platform_defaults_are_kept() -> None:
    scaling = Scaling.parse("0:1", [])
    assert scaling.autoscale
    assert (scaling.autoscaling_window, scaling.scale_down_delay) == (60.0, 900.0)
    assert scaling.autoscaling_config()["target_ongoing_requests"] == pytest.approx(0.7)


def test_a_custom_server_gets_one_replica_per_node() -> None:
    server = {"start_command": "x", "server_port": 9000, "predict_endpoint": "/p"}
    options = deployment_options(config(docker_server=server), Scaling.fixed(2))
    assert options["max_replicas_per_node"] == 1


def test_the_cli_forms_of_replicas() -> None:
    assert Scaling.parse("3") == Scaling.fixed(3)
    ranged = Scaling.parse("1:5", ["scale_down_delay=30", "concurrency-target=2"])
    assert (ranged.min_replica, ranged.max_replica) == (1, 5)
    assert (ranged.scale_down_delay, ranged.concurrency_target) == (30.0, 2.0)


@pytest.mark.parametrize(
    ("replicas", "settings", "message"),
    [
        ("two", [], "N or MIN:MAX"),
        ("3:1", [], "above the maximum"),
        ("0", [], "at least 1"),
        ("0:2", ["speed=3"], "KEY=VALUE"),
        ("0:2", ["scale_down_delay=soon"], "wants a number"),
        ("0:2", ["autoscaling_window=0"], "must be positive"),
    ],
)
def test_bad_replica_settings_are_refused_clearly(
    replicas: str, settings: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Scaling.parse(replicas, settings)


@pytest.mark.parametrize(
    ("value", "expected"), [("1", 1.0), (2, 2.0), ("250m", 0.25), ("1.5", 1.5)]
)
def test_cpu_quantities(value: str | int, expected: float) -> None:
    assert cpu_count(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2Gi", 2 * 2**30), ("512Mi", 512 * 2**20), ("1G", 10**9), (1024, 1024), ("300", 300)],
)
def test_memory_quantities(value: str | int, expected: int) -> None:
    assert memory_bytes(value) == expected


@pytest.mark.parametrize("bad", ["lots", "2 Gibibytes", "-1"])
def test_a_bad_memory_size_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"resources\.memory"):
        memory_bytes(bad)


def kingpost_serve(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kingpost", "serve", str(EXAMPLES / "echo"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_the_cli_refuses_ray_with_watch() -> None:
    result = kingpost_serve("--ray", "--watch")
    assert result.returncode == 2
    assert "--ray does not combine" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="Ray is installed")
def test_the_cli_says_how_to_get_ray() -> None:
    result = kingpost_serve("--ray")
    assert result.returncode == 2
    assert "pip install 'kingpost[ray]'" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")
def test_the_cli_refuses_bad_replicas_before_starting_ray() -> None:
    result = kingpost_serve("--ray", "--replicas", "3:1")
    assert result.returncode == 2
    assert "above the maximum" in result.stderr
