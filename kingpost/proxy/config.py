"""The ``docker_server:`` block of config.yaml: which command to run and how to reach it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kingpost.errors import ConfigError


class CustomServerConfig(BaseModel):
    """A custom server: a command that serves HTTP on ``127.0.0.1:server_port``.

        docker_server:
          start_command: "python -m my_server --port 8000"
          server_port: 8000
          predict_endpoint: /predict
          readiness_endpoint: /health
          liveness_endpoint: /health

    The first five keys are the hosted platform's; the others are Kingpost's own.
    """

    model_config = ConfigDict(extra="allow")

    start_command: str = Field(min_length=1)
    server_port: int = Field(ge=1, le=65535)
    predict_endpoint: str
    readiness_endpoint: str
    liveness_endpoint: str
    # Kingpost: how long the first start may take before the server gives up.
    startup_timeout: float = Field(default=1800.0, gt=0)
    # Kingpost: time between SIGTERM and SIGKILL when the command is stopped.
    stop_grace_period: float = Field(default=10.0, ge=0)
    # Kingpost: restart delays after a crash: first, then doubling up to the max.
    restart_delay: float = Field(default=0.5, gt=0)
    max_restart_delay: float = Field(default=30.0, gt=0)

    @field_validator("predict_endpoint", "readiness_endpoint", "liveness_endpoint")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be a path starting with '/'")
        return value

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


def parse_custom_server(data: object) -> CustomServerConfig:
    """Validate a ``docker_server:`` mapping; ConfigError names the first bad field."""
    if not isinstance(data, dict):
        raise ConfigError("config.yaml field 'docker_server': must be a mapping")
    try:
        return CustomServerConfig.model_validate(data)
    except ValidationError as exc:
        parts = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            parts.append(f"config.yaml field 'docker_server.{field}': {error['msg']}")
        raise ConfigError("; ".join(parts)) from None
