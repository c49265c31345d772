"""Finding, importing and constructing the user's Model class."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kingpost.config import ModelConfig
from kingpost.errors import ModelDefinitionError, ModelLoadError
from kingpost.model.descriptor import ModelDescriptor
from kingpost.model.secrets import DEFAULT_SECRETS_DIR, Secrets

# Truss's constructor keywords, plus Kingpost's model_dir (the served directory).
INIT_KWARGS = ("config", "data_dir", "secrets", "environment", "lazy_data_resolver", "model_dir")


class LazyDataResolver:
    """Handed to ``__init__`` as ``lazy_data_resolver``; nothing is fetched lazily yet."""

    def block_until_download_complete(self) -> None:
        return None


@dataclass
class ModelSource:
    """A model directory resolved to its parts."""

    model_dir: Path
    config: ModelConfig
    secrets_dir: Path = DEFAULT_SECRETS_DIR
    environment: dict[str, Any] | None = None

    @property
    def data_dir(self) -> Path:
        return self.model_dir / self.config.data_dir

    @property
    def module_dir(self) -> Path:
        return self.model_dir / self.config.model_module_dir

    @property
    def packages_dir(self) -> Path:
        return self.model_dir / self.config.bundled_packages_dir


def prepare_environment(source: ModelSource) -> None:
    """Apply ``environment_variables`` and put bundled packages on sys.path (before import)."""
    os.environ.update(source.config.environment_variables)
    # The model directory itself goes first so that ``model.model`` (and the user's
    # ``from model.helpers import ...``) resolve there, as on the hosted platform.
    # ``external_package_dirs`` (shared between model directories) go last.
    external = [(source.model_dir / d).resolve() for d in source.config.external_package_dirs]
    for path in (*reversed(external), source.packages_dir, source.model_dir):
        if path.is_dir() and str(path) not in sys.path:
            sys.path.insert(0, str(path))


def import_model_class(source: ModelSource) -> type:
    """Import the Model class (or an engine's class when config has ``engine:``)."""
    config = source.config
    if config.trt_llm is not None and (
        config.engine is not None or not (source.module_dir / config.model_class_filename).is_file()
    ):
        adopt_platform_engine(source)
    if config.engine is not None:
        from kingpost.engines import engine_model_class

        kind = config.engine.get("kind")
        if not isinstance(kind, str):
            from kingpost.errors import ConfigError

            raise ConfigError("engine.kind: required (e.g. llama_cpp, sentence_transformers)")
        return engine_model_class(kind)

    module_file = source.module_dir / config.model_class_filename
    if not module_file.is_file():
        raise ModelLoadError(f"model file not found: {module_file}")
    module_name = f"{source.module_dir.name}.{module_file.stem}"
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ModelLoadError(
            f"importing {module_file} failed: {type(exc).__name__}: {exc}"
        ) from exc
    model_cls = getattr(module, config.model_class_name, None)
    if not inspect.isclass(model_cls):
        raise ModelDefinitionError(f"{module_file} defines no class '{config.model_class_name}'")
    return model_cls


def adopt_platform_engine(source: ModelSource) -> None:
    """Serve a ``trt_llm:`` config with the local engine that runs its checkpoint."""
    from kingpost.engines.platform_configs import local_engine_block

    config = source.config
    block, served_name = local_engine_block(config.as_dict(), source.model_dir)
    config.engine = block
    if served_name:
        config.model_name = served_name


def describe_model(source: ModelSource) -> ModelDescriptor:
    """Import and inspect the model class: every definition error surfaces here."""
    prepare_environment(source)
    return ModelDescriptor.from_class(import_model_class(source))


def construct_model(descriptor: ModelDescriptor, source: ModelSource) -> Any:
    """Call ``Model(**kwargs)`` with only the keyword arguments its signature names."""
    available: dict[str, Any] = {
        "config": source.config.as_dict(),
        "data_dir": source.data_dir,
        "model_dir": source.model_dir,
        "secrets": Secrets(set(source.config.secrets), source.secrets_dir),
        "environment": source.environment,
        "lazy_data_resolver": LazyDataResolver(),
    }
    params = inspect.signature(descriptor.cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = available
    else:
        kwargs = {name: value for name, value in available.items() if name in params}
    if "trt_llm" in params and source.config.trt_llm is not None and source.config.engine is None:
        # a model.py wrapping the platform's engine gets the local one, loaded
        from kingpost.engines.platform_configs import platform_engine

        kwargs["trt_llm"] = platform_engine(source.config.as_dict(), source.model_dir)
    return descriptor.cls(**kwargs)
