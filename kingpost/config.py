"""The config.yaml schema.

Truss-compatible: every field a Truss model directory may carry is accepted,
unknown top-level fields are kept, and Kingpost's own keys sit beside them.
Fields that only configure an image build or a hosted platform are accepted
and listed by ``unused_locally`` so the server can say once that it ignores
them. The ``runtime:`` block is strict: an unknown key there is refused.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kingpost.errors import ConfigError

DEFAULT_MAX_REQUEST_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_QUEUE = 64
DEFAULT_MAX_JSON_VALUES = 2_000_000

# Top-level fields that shape an image build or a hosted deployment.
BUILD_ONLY_FIELDS = (
    "base_image",
    "build",
    "build_commands",
    "python_version",
    "resources",
    "system_packages",
    "bis_llm",
    "training_checkpoints",
    "examples_filename",
)
# runtime.* fields that the hosted platform acts on and a local server cannot.
PLATFORM_RUNTIME_FIELDS = (
    "health_checks",
    "oidc",
    "remote_ssh",
    "egress_restrictions",
    "truss_server_version_override",
)


class _Block(BaseModel):
    """A nested config block: typed where known, other keys kept."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


class TransportConfig(BaseModel):
    """``runtime.transport``: the websocket ping settings apply to ``/v1/websocket``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["http", "websocket", "grpc"] = "http"
    ping_interval_seconds: float | None = Field(default=None, gt=0)
    ping_timeout_seconds: float | None = Field(default=None, gt=0)


class RuntimeConfig(BaseModel):
    """The ``runtime:`` block: how requests are admitted and bounded."""

    model_config = ConfigDict(extra="forbid")

    predict_concurrency: int = Field(default=1, ge=1)
    # Kingpost: a limit shared by the five /v1 endpoint hooks; None means unlimited.
    endpoint_concurrency: int | None = Field(default=None, ge=1)
    streaming_read_timeout: float = Field(default=60.0, gt=0)
    request_timeout: float = Field(default=1200.0, gt=0)
    max_request_bytes: int = Field(default=DEFAULT_MAX_REQUEST_BYTES, ge=1)
    # Kingpost: requests that may wait for a busy slot (past it: 503), and values
    # one JSON body may make the server build (past it: 413).
    max_queue: int = Field(default=DEFAULT_MAX_QUEUE, ge=0)
    max_json_values: int = Field(default=DEFAULT_MAX_JSON_VALUES, ge=1)
    enable_tracing_data: bool = False
    enable_debug_logs: bool = False
    is_websocket_endpoint: bool | None = None
    transport: TransportConfig = Field(default_factory=TransportConfig)
    # Legacy: Truss refuses anything but one worker per server, and so do we.
    num_workers: Literal[1] = 1
    health_checks: _Block = Field(default_factory=_Block)
    oidc: _Block = Field(default_factory=_Block)
    remote_ssh: _Block = Field(default_factory=_Block)
    egress_restrictions: _Block | None = None
    truss_server_version_override: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _transport_from_legacy_flag(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and data.get("is_websocket_endpoint")
            and not data.get("transport")
        ):
            data = {**data, "transport": {"kind": "websocket"}}
        return data

    @model_validator(mode="after")
    def _check_transport(self) -> RuntimeConfig:
        if self.transport.kind == "grpc":
            raise ValueError("transport.kind 'grpc' is not served by Kingpost; use http")
        websocket = self.transport.kind == "websocket"
        if self.is_websocket_endpoint is False and websocket:
            raise ValueError("is_websocket_endpoint is false but transport.kind is websocket")
        self.is_websocket_endpoint = websocket
        return self


class AsyncQueueConfig(BaseModel):
    """``async_queue:``: Kingpost's queued async inference (``/async_predict``).

    The queue lives in ``database_url`` (SQLite by default, a ``postgresql://``
    URL when several processes share it). Secrets for signing webhooks come from
    ``webhook_secrets``, the ``KINGPOST_WEBHOOK_SECRET`` environment variable or
    ``webhook_secret_file`` (one secret a line; the first signs, all are listed
    while they rotate).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # None: an SQLite file under $KINGPOST_STATE_DIR (default ~/.local/state/kingpost).
    database_url: str | None = None
    model_id: str | None = None  # reported in statuses and webhooks; default: model_name
    deployment_id: str = "local"
    max_body_bytes: int = Field(default=256 * 1024, ge=1)
    keep_outputs: bool = True
    result_retention_seconds: float = Field(default=3600.0, ge=0)
    # At most this many async requests run at once; None: predict_concurrency.
    concurrency: int | None = Field(default=None, ge=1)
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_interval_seconds: float = Field(default=0.5, gt=0)
    webhook_secrets: list[str] = Field(default_factory=list)
    webhook_secret_file: str | None = None
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=5, ge=1, le=20)
    webhook_initial_delay_ms: int = Field(default=1000, ge=0, le=60_000)
    webhook_max_delay_ms: int = Field(default=30_000, ge=0, le=600_000)
    # Webhooks to link-local addresses (cloud metadata services live there) are refused.
    allow_link_local_webhooks: bool = False


class Resources(_Block):
    cpu: str | int | float = "1"
    memory: str | int = "2Gi"
    accelerator: str | dict[str, Any] | None = None
    use_gpu: bool = False
    node_count: int | None = Field(default=None, ge=1)
    instance_type: str | None = None


class ModelRepo(_Block):
    """One ``model_cache`` entry: a repository the model reads its weights from."""

    repo_id: str = Field(min_length=1)
    revision: str | None = None
    allow_patterns: list[str] | None = None
    ignore_patterns: list[str] | None = None
    volume_folder: str | None = Field(default=None, min_length=1)
    use_volume: bool = False
    kind: Literal["hf", "gcs", "s3", "azure"] = "hf"
    runtime_secret_name: str = "hf_access_token"

    @model_validator(mode="after")
    def _volume_needs_folder(self) -> ModelRepo:
        if self.use_volume and not self.volume_folder:
            raise ValueError("use_volume: true needs a volume_folder")
        return self


class WeightsSource(_Block):
    """One ``weights`` entry: a URI (hf://, s3://, gs://, https://...) and where it is mounted."""

    source: str = Field(min_length=1)
    mount_location: str = Field(min_length=1)
    auth: dict[str, Any] | None = None
    auth_secret_name: str | None = None
    allow_patterns: list[str] | None = None
    ignore_patterns: list[str] | None = None

    @model_validator(mode="after")
    def _check_uri(self) -> WeightsSource:
        if "://" not in self.source:
            raise ValueError(f"source {self.source!r} needs a scheme such as hf:// or s3://")
        if not self.mount_location.startswith("/"):
            raise ValueError(f"mount_location {self.mount_location!r} must be an absolute path")
        return self


class ExternalDataItem(_Block):
    url: str = Field(min_length=1)
    local_data_path: str = Field(min_length=1)
    backend: str = "http_public"
    name: str | None = None


class ModelConfig(BaseModel):
    """A parsed config.yaml. Fields not listed here are kept as they are."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())

    model_name: str | None = None
    description: str | None = None
    model_class_name: str = "Model"
    model_module_dir: str = "model"
    model_class_filename: str = "model.py"
    data_dir: str = "data"
    bundled_packages_dir: str = "packages"
    external_package_dirs: list[str] = Field(default_factory=list)
    environment_variables: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, Any] = Field(default_factory=dict)
    model_metadata: dict[str, Any] = Field(default_factory=dict)
    requirements: list[str] = Field(default_factory=list)
    requirements_file: str | None = None
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    model_cache: list[ModelRepo] = Field(default_factory=list)
    weights: list[WeightsSource] = Field(default_factory=list)
    external_data: list[ExternalDataItem] | None = None
    docker_server: dict[str, Any] | None = None
    engine: dict[str, Any] | None = None
    async_queue: AsyncQueueConfig = Field(default_factory=AsyncQueueConfig)

    # Build and platform settings: accepted, typed, not acted on locally.
    python_version: str = "py311"
    base_image: _Block | None = None
    system_packages: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    build: _Block = Field(default_factory=_Block)
    build_commands: list[str] = Field(default_factory=list)
    examples_filename: str = "examples.yaml"
    # Served by a local engine (kingpost.engines.platform_configs), not built.
    trt_llm: dict[str, Any] | None = None
    bis_llm: dict[str, Any] | None = None
    training_checkpoints: dict[str, Any] | None = None

    # Legacy fields older Truss versions write; accepted and ignored.
    input_type: str = "Any"
    model_framework: str = "custom"
    model_type: str = "Model"
    use_local_src: bool = False
    cache_internal: list[ModelRepo] = Field(default_factory=list)
    live_reload: bool = False
    apply_library_patches: bool = True
    spec_version: str = "2.0"

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # `requirements:` with nothing after it is YAML null: treat it as absent.
        data = {
            key: value
            for key, value in data.items()
            if value is not None or key not in cls.model_fields or _nullable(key)
        }
        if "hf_cache" in data and "model_cache" not in data:  # the field's former name
            data["model_cache"] = data.pop("hf_cache")
        return data

    @model_validator(mode="after")
    def _check_contradictions(self) -> ModelConfig:
        if self.requirements and self.requirements_file:
            raise ValueError("set either requirements or requirements_file, not both")
        if len({repo.use_volume for repo in self.model_cache}) > 1:
            raise ValueError("model_cache entries must all use use_volume: true, or none")
        mounts = [source.mount_location for source in self.weights]
        duplicates = sorted({m for m in mounts if mounts.count(m) > 1})
        if duplicates:
            raise ValueError(f"weights: mount_location {duplicates[0]!r} is used twice")
        return self

    def as_dict(self) -> dict[str, Any]:
        """The config as the model's ``__init__`` receives it: defaults filled in."""
        return self.model_dump(mode="json")

    def unused_locally(self) -> list[str]:
        """Fields set in config.yaml that only matter when building or hosting an image."""
        fields = [name for name in BUILD_ONLY_FIELDS if name in self.model_fields_set]
        runtime = self.runtime.model_fields_set
        fields += [f"runtime.{name}" for name in PLATFORM_RUNTIME_FIELDS if name in runtime]
        return fields


def _nullable(key: str) -> bool:
    field = ModelConfig.model_fields[key]
    return field.default is None and field.default_factory is None


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
        # Skip the type tag pydantic adds for tagged unions and the like.
        field = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            parent = ".".join(str(p) for p in error["loc"][:-1])
            known = _known_keys(parent)
            close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
            message = f"unknown key in '{parent}' ({hint})"
        parts.append(
            f"config.yaml field '{field}': {message}" if field else f"config.yaml: {message}"
        )
    return "; ".join(parts)


def _known_keys(block: str) -> list[str]:
    model: type[BaseModel] = ModelConfig
    for part in block.split("."):
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)
