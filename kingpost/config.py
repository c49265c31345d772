"""The config.yaml schema.

Truss-compatible: every field a Truss model directory may carry is accepted,
unknown top-level fields are kept, and Kingpost's own keys sit beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kingpost.errors import ConfigError

DEFAULT_MAX_REQUEST_BYTES = 100 * 1024 * 1024


class TransportConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: str = "http"
    ping_interval_seconds: float | None = None
    ping_timeout_seconds: float | None = None


class RuntimeConfig(BaseModel):
    """The ``runtime:`` block: how requests are admitted and bounded."""

    model_config = ConfigDict(extra="allow")

    predict_concurrency: int = Field(default=1, ge=1)
    # Kingpost: a limit shared by the five /v1 endpoint hooks; None means unlimited.
    endpoint_concurrency: int | None = Field(default=None, ge=1)
    streaming_read_timeout: float = Field(default=60.0, gt=0)
    request_timeout: float = Field(default=1200.0, gt=0)
    max_request_bytes: int = Field(default=DEFAULT_MAX_REQUEST_BYTES, ge=1)
    enable_tracing_data: bool = False
    enable_debug_logs: bool = False
    is_websocket_endpoint: bool = False
    transport: TransportConfig = Field(default_factory=TransportConfig)


class ModelConfig(BaseModel):
    """A parsed config.yaml. Fields not listed here are kept as they are."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())

    model_name: str | None = None
    model_class_name: str = "Model"
    model_module_dir: str = "model"
    model_class_filename: str = "model.py"
    data_dir: str = "data"
    bundled_packages_dir: str = "packages"
    environment_variables: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, Any] = Field(default_factory=dict)
    model_metadata: dict[str, Any] = Field(default_factory=dict)
    requirements: list[str] = Field(default_factory=list)
    requirements_file: str | None = None
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    engine: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The config as the model's ``__init__`` receives it: defaults filled in."""
        return self.model_dump(mode="json")


def parse_config(data: dict[str, Any] | None) -> ModelConfig:
    """Validate a config mapping; ConfigError names the first bad field."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError("config.yaml: the top level must be a mapping")
    # YAML turns `KEY: 1` into an int; environment values are strings.
    env = data.get("environment_variables")
    if isinstance(env, dict):
        data = {**data, "environment_variables": {k: _env_str(v) for k, v in env.items()}}
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc)) from None


def load_config(model_dir: Path) -> ModelConfig:
    """Read ``model_dir/config.yaml`` (a missing file means all defaults)."""
    path = model_dir / "config.yaml"
    if not path.exists():
        return parse_config({})
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data)


def _env_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "config"
        parts.append(f"config.yaml field '{field}': {error['msg']}")
    return "; ".join(parts)
