"""``kingpost.yaml``: models, environments and autoscaling declared in one file.

    platform:                       # read by `kingpost up` (flags win)
      park_timeout: 60
      key_quota: {rate: 20, concurrency: 4}        # each API key
      model_quotas: {echo: {rate: 100, concurrency: 16}}   # each model, all callers
      backend: process              # for environments that name none; or ray
      ray_address: auto             # the ray backend's cluster (default: a local one)
    models:
      echo:
        directory: ./examples/echo  # relative to this file
        deploy_to: [production]     # where a changed directory is promoted
        environments:
          production: {min_replica: 1, max_replica: 3, concurrency_target: 4}
          staging: {backend: ray}   # a Ray Serve application (process: local replicas)
        development: false          # also run the directory as the development deployment

Applying is idempotent: models and environments are created when missing,
autoscaling set when it differs, and the directory deployed (and promoted to
``deploy_to``) only when its content digest differs from what those
environments serve. Nothing undeclared is deleted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kingpost.errors import InvalidRequestError
from kingpost.platform import bundle
from kingpost.platform.client import AdminClient
from kingpost.platform.settings import Autoscaling

DEFAULT_FILE = Path("kingpost.yaml")


class QuotaSection(BaseModel):
    """A rate (requests per second, bursts of ``burst``) and a number at once."""

    model_config = ConfigDict(extra="forbid")
    rate: float | None = Field(default=None, gt=0)
    burst: float | None = Field(default=None, ge=1)
    concurrency: int | None = Field(default=None, ge=1)


class PlatformSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    park_timeout: float | None = Field(default=None, gt=0)
    backend: Literal["process", "ray"] | None = None
    ray_address: str | None = None
    park_limit: int | None = Field(default=None, ge=1)
    request_timeout: float | None = Field(default=None, gt=0)
    replica_start_timeout: float | None = Field(default=None, gt=0)
    development_idle: float | None = Field(default=None, ge=0)
    key_quota: QuotaSection | None = None  # each key, unless the key has its own
    model_quotas: dict[str, QuotaSection] | None = None  # each model (by name), all callers


class ModelSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    directory: Path | None = None
    deploy_to: list[str] = Field(default_factory=lambda: ["production"])
    environments: dict[str, Autoscaling] = Field(default_factory=dict)
    development: bool = False


class PlatformFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    platform: PlatformSection = Field(default_factory=lambda: PlatformSection())
    models: dict[str, ModelSection] = Field(default_factory=dict)


def load_file(path: Path) -> PlatformFile:
    """The parsed file, directories made absolute; InvalidRequestError naming the field."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidRequestError(f"{path}: {exc}") from None
    try:
        parsed = PlatformFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidRequestError(f"{path}: {problems}") from None
    for name, model in parsed.models.items():
        if model.directory is not None and not model.directory.is_absolute():
            model.directory = (path.parent / model.directory).resolve()
        if model.directory is None and model.development:
            raise InvalidRequestError(f"{path}: models.{name}: development needs a directory")
    return parsed


def apply_file(client: AdminClient, path: Path, wait: bool = True) -> Iterator[str]:
    """Apply ``path`` through the admin API, saying what each step did."""
    declared = load_file(path)
    for name, model in declared.models.items():
        yield from _apply_model(client, name, model, wait)


def _apply_model(client: AdminClient, name: str, model: ModelSection, wait: bool) -> Iterator[str]:
    known = {m["name"]: m for m in client.models()}
    if name not in known:
        client.create_model(name)
        yield f"model {name}: created"
    environments = {env["name"]: env for env in client.environments(name)}
    for env_name, settings in model.environments.items():
        wanted = settings.model_dump()
        if env_name not in environments:
            client.create_environment(name, env_name, wanted)
            yield f"model {name}: environment {env_name} created"
        elif environments[env_name]["autoscaling"] != wanted:
            client.autoscaling(name, env_name, wanted)
            yield f"model {name}: environment {env_name} autoscaling set"
    environments = {env["name"]: env for env in client.environments(name)}
    if model.directory is None:
        return
    digest = bundle.digest(model.directory)
    stale = [
        env_name
        for env_name in model.deploy_to
        if _serving_digest(client, environments.get(env_name)) != digest
    ]
    for env_name in stale:
        if env_name not in environments:
            client.create_environment(name, env_name)
            yield f"model {name}: environment {env_name} created"
    if stale:
        record = client.deploy(model.directory, name, environment=stale[0])
        yield f"model {name}: deployment {record['id']} promoting to {stale[0]}"
        if wait:
            client.wait_deployed(record["id"], stale[0])
        for env_name in stale[1:]:
            client.promote(record["id"], env_name)
            yield f"model {name}: deployment {record['id']} promoting to {env_name}"
            if wait:
                client.wait_deployed(record["id"], env_name)
    if model.development:
        record = client.deploy(model.directory, name, dev=True)
        yield f"model {name}: development deployment {record['id']} from {model.directory}"


def _serving_digest(client: AdminClient, env: dict[str, Any] | None) -> str | None:
    if env is None or env.get("deployment_id") is None:
        return None
    return str(client.deployment(env["deployment_id"])["digest"])
