"""How a model directory's settings become Ray Serve deployment options.

Pure data, no Ray import: ``deployment_options(config, scaling)`` is the whole
mapping, so it is tested (and used by the platform) without a cluster.

    runtime.predict_concurrency        -> max_ongoing_requests
    an engine's sequences / batch      -> max_ongoing_requests (what it runs together)
    resources.cpu / memory / use_gpu   -> ray_actor_options (num_cpus, memory, num_gpus)
    resources.accelerator "H100:2"     -> num_gpus 2, accelerator_type "H100"
    Scaling(min_replica, max_replica, ...) -> autoscaling_config (PLATFORM.md's table)
    Scaling.fixed(n)                    -> num_replicas n
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace
from typing import Any

from kingpost.config import ModelConfig, Resources
from kingpost.errors import ConfigError

_MEMORY_UNITS = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}
# What an engine runs at once, by kind: the engine setting and its default (vLLM's own
# max_num_seqs when unset). Serve holds back requests past max_ongoing_requests, so it
# must be what the engine batches, not the predict hook's limit (engines serve /v1 hooks).
ENGINE_CONCURRENCY: dict[str, tuple[str, int]] = {
    "llama_cpp": ("max_concurrent_sequences", 4),
    "vllm": ("max_concurrent_sequences", 256),
    "sentence_transformers": ("max_batch_size", 32),
}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class Scaling:
    """Replica settings in the platform's words (PLATFORM.md, "Request path and autoscaling").

    ``min_replica == max_replica`` with ``autoscale=False`` is a fixed count;
    ``min_replica: 0`` allows scale to zero.

        Scaling.fixed(2)
        Scaling(min_replica=0, max_replica=3, scale_down_delay=30)
    """

    min_replica: int = 0
    max_replica: int = 1
    autoscaling_window: float = 60.0
    scale_down_delay: float = 900.0
    concurrency_target: float = 1.0
    target_utilization_percentage: float = 70.0
    autoscale: bool = True

    @classmethod
    def fixed(cls, replicas: int) -> Scaling:
        return cls(min_replica=replicas, max_replica=replicas, autoscale=False).checked()

    @classmethod
    def parse(cls, replicas: str, settings: list[str] | None = None) -> Scaling:
        """From the CLI: ``--replicas N`` (fixed) or ``MIN:MAX`` plus ``--autoscaling KEY=VALUE``.

        ``Scaling.parse("0:3", ["scale_down_delay=30"])``
        """
        low, sep, high = replicas.partition(":")
        try:
            bounds = (int(low), int(high)) if sep else (int(low), int(low))
        except ValueError:
            raise ConfigError(f"--replicas wants N or MIN:MAX, not {replicas!r}") from None
        if not sep and not settings:
            return cls.fixed(bounds[0])
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in settings or []:
            key, eq, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not eq or key not in known or key in {"min_replica", "max_replica", "autoscale"}:
                names = ", ".join(sorted(set(known) - {"min_replica", "max_replica", "autoscale"}))
                raise ConfigError(f"--autoscaling wants KEY=VALUE with KEY one of {names}")
            try:
                values[key] = float(value)
            except ValueError:
                raise ConfigError(f"--autoscaling {key} wants a number, not {value!r}") from None
        return cls(min_replica=bounds[0], max_replica=bounds[1], **values).checked()

    def checked(self) -> Scaling:
        if not self.autoscale and self.min_replica < 1:
            raise ConfigError("a fixed replica count must be at least 1 (0:N scales to zero)")
        if self.min_replica < 0 or self.max_replica < 1:
            raise ConfigError("replicas: the minimum must be >= 0 and the maximum >= 1")
        if self.min_replica > self.max_replica:
            raise ConfigError("replicas: the minimum is above the maximum")
        positive = ("autoscaling_window", "concurrency_target", "target_utilization_percentage")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"autoscaling: {name} must be positive")
        if self.scale_down_delay < 0:
            raise ConfigError("autoscaling: scale_down_delay must not be negative")
        return self

    def with_replicas(self, min_replica: int, max_replica: int) -> Scaling:
        return replace(self, min_replica=min_replica, max_replica=max_replica).checked()

    def autoscaling_config(self) -> dict[str, Any]:
        """Ray Serve's ``autoscaling_config`` for these settings."""
        target = self.concurrency_target * self.target_utilization_percentage / 100.0
        return {
            "min_replicas": self.min_replica,
            "initial_replicas": max(self.min_replica, 1),
            "max_replicas": self.max_replica,
            "target_ongoing_requests": target,
            "look_back_period_s": self.autoscaling_window,
            "downscale_delay_s": self.scale_down_delay,
            "downscale_to_zero_delay_s": self.scale_down_delay,
            # The platform applies an upscale at the next decision.
            "upscale_delay_s": 0.0,
        }

    @property
    def metrics_interval(self) -> float:
        """How often load should reach Serve's autoscaler: a few times per window.

        Ray's default (10 s) is longer than a short window; ``ClusterOptions``
        passes this to Serve's handles and replicas.
        """
        return min(10.0, max(0.5, self.autoscaling_window / 4))


def deployment_options(config: ModelConfig, scaling: Scaling) -> dict[str, Any]:
    """Keyword arguments for ``serve.deployment(...).options(**these)``."""
    options: dict[str, Any] = {
        "max_ongoing_requests": max_ongoing_requests(config),
        "ray_actor_options": actor_options(config.resources),
        # Model load can take minutes; Serve's default health period is 10 s.
        "health_check_period_s": 5.0,
        "health_check_timeout_s": 30.0,
        "graceful_shutdown_timeout_s": 30.0,
    }
    if config.docker_server is not None:
        # The supervised command listens on one fixed port: one replica per node.
        options["max_replicas_per_node"] = 1
    if scaling.autoscale:
        options["autoscaling_config"] = scaling.autoscaling_config()
    else:
        options["num_replicas"] = scaling.min_replica
    return options


def max_ongoing_requests(config: ModelConfig) -> int:
    """Requests one replica holds at once: ``predict_concurrency``, or an engine's concurrency.

    An engine answers on the ``/v1`` hooks, which ``predict_concurrency`` does not bound; an
    explicit ``runtime.endpoint_concurrency`` counts too.
    """
    runtime = config.runtime
    limit = max(runtime.predict_concurrency, runtime.endpoint_concurrency or 0)
    engine = config.engine or {}
    setting = ENGINE_CONCURRENCY.get(str(engine.get("kind")))
    if setting is not None:
        name, default = setting
        limit = max(limit, int(engine.get(name) or default))
    return limit


def actor_options(resources: Resources) -> dict[str, Any]:
    """``ray_actor_options`` from config.yaml's ``resources`` block."""
    options: dict[str, Any] = {
        "num_cpus": cpu_count(resources.cpu),
        "memory": memory_bytes(resources.memory),
    }
    gpus, kind = accelerator(resources)
    if gpus:
        options["num_gpus"] = gpus
    if kind:
        options["accelerator_type"] = kind
    return options


def cpu_count(value: str | int | float) -> float:
    """``"1"``, ``2``, ``"500m"`` (Kubernetes millicores) -> CPUs as a float."""
    text = str(value).strip()
    try:
        cpus = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ConfigError(f"resources.cpu: {value!r} is not a CPU count") from None
    if cpus < 0 or not math.isfinite(cpus):
        raise ConfigError(f"resources.cpu: {value!r} must be a non-negative number")
    return cpus


def memory_bytes(value: str | int) -> int:
    """``"2Gi"``, ``"512Mi"``, ``"1G"``, ``1048576`` -> bytes."""
    if isinstance(value, int):
        return value
    match = _QUANTITY.match(value)
    unit = match[2].lower() if match else None
    if match is None or unit not in _MEMORY_UNITS:
        raise ConfigError(f"resources.memory: {value!r} is not a size such as 2Gi or 512Mi")
    return int(float(match[1]) * _MEMORY_UNITS[unit])


def accelerator(resources: Resources) -> tuple[float, str | None]:
    """(number of GPUs, Ray accelerator type or None) from ``accelerator`` / ``use_gpu``.

    ``"H100:2"`` -> (2, "H100"); ``"A10G"`` -> (1, "A10G"); ``use_gpu: true`` -> (1, None).
    """
    spec = resources.accelerator
    if isinstance(spec, dict):
        kind = spec.get("type") or spec.get("accelerator")
        count = spec.get("count", 1)
        spec = f"{kind}:{count}" if kind else None
    if not spec:
        return (1.0 if resources.use_gpu else 0.0), None
    kind, _, count = str(spec).partition(":")
    try:
        gpus = float(count) if count else 1.0
    except ValueError:
        raise ConfigError(f"resources.accelerator: {spec!r} is not TYPE or TYPE:COUNT") from None
    return gpus, kind.strip() or None
