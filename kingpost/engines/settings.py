"""Reading an engine's ``engine:`` block from config.yaml, the same way for every engine."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kingpost.errors import ConfigError

SettingsT = TypeVar("SettingsT", bound=BaseModel)


def parse_engine_block(config: dict[str, Any], settings: type[SettingsT], kind: str) -> SettingsT:
    """Validate ``config["engine"]`` as ``settings``; ConfigError names every bad field.

    settings = parse_engine_block(config, LlamaCppConfig, "llama_cpp")
    """
    block = config.get("engine")
    if not isinstance(block, dict):
        raise ConfigError(f"engine: expected a mapping with kind: {kind} and model")
    try:
        return settings.model_validate(block)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, settings, kind)) from None


def _describe(exc: ValidationError, settings: type[BaseModel], kind: str) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            known = ", ".join(settings.model_fields)
            parts.append(f"engine.{field}: not a {kind} setting (known: {known})")
        else:
            parts.append(f"engine.{field}: {error['msg']}")
    return "; ".join(parts)
