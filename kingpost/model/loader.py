"""Finding, importing and constructing the user's Model class."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
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
    # The model directory itself goes first so that what the model imports by name
    # from beside config.yaml resolves there, as on the hosted platform.
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
    importlib.invalidate_caches()
    try:
        module = import_model_module(source.module_dir, module_file.stem)
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


def import_model_module(module_dir: Path, stem: str) -> ModuleType:
    """Import ``stem`` of the package in ``module_dir``, as ``model.model`` on Truss.

    The package (``model`` for ``model/``) is bound to this directory itself, not
    found through ``sys.path``: a model's ``from model.helpers import ...`` and
    ``from .helpers import ...`` both reach its own siblings, as one module. Where
    the name was bound to another directory before (several model directories in
    one process, as in-process tests do), that directory's modules are first taken
    out of ``sys.modules``; the classes and functions already imported from them
    keep working, only a later ``import model...`` sees the directory loaded last.
    """
    directory = module_dir.resolve()
    package_name = directory.name
    current = sys.modules.get(package_name)
    if current is not None and _module_dirs(current) != [str(directory)]:
        for name in [n for n in sys.modules if n.split(".", 1)[0] == package_name]:
            del sys.modules[name]
        current = None
    if current is None:
        _import_package(package_name, directory)
    return importlib.import_module(f"{package_name}.{stem}")


def _module_dirs(module: ModuleType) -> list[str]:
    file = getattr(module, "__file__", None)
    files = _module_files(module)
    return [str(Path(path).resolve()) for path in files if path != file]


def _import_package(name: str, directory: Path) -> ModuleType:
    """Import the package at ``directory`` (with or without ``__init__.py``) as ``name``."""
    init = directory / "__init__.py"
    spec: importlib.machinery.ModuleSpec | None
    if init.is_file():
        spec = importlib.util.spec_from_file_location(
            name, init, submodule_search_locations=[str(directory)]
        )
    else:  # a namespace package, but of this one directory, not of every one on sys.path
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(directory)]
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        if spec.loader is not None:
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def forget_modules(directory: Path) -> dict[str, ModuleType]:
    """Take every module imported from under ``directory`` out of ``sys.modules``.

    The next import reads the files again (a reload, or a fresh server in
    process). Returns what was taken out, by name.
    """
    prefix = str(directory.resolve()) + os.sep
    forgotten = {}
    for name, module in list(sys.modules.items()):
        if any(path.startswith(prefix) for path in _module_files(module)):
            forgotten[name] = sys.modules.pop(name)
    importlib.invalidate_caches()
    return forgotten


def _module_files(module: object) -> list[str]:
    """A module's file and package directories, as far as it tells them plainly.

    Some libraries put objects in ``sys.modules`` that answer any attribute (torch's
    ``torch.classes``): what is not a string, or a list of them, is not a path.
    """
    try:
        file = getattr(module, "__file__", None)
        path = getattr(module, "__path__", None)
    except Exception:  # a lazy module failing to import on attribute access
        return []
    files = [file] if isinstance(file, str) else []
    if path is not None and (
        isinstance(path, (list, tuple)) or type(path).__name__ == "_NamespacePath"
    ):
        files += [entry for entry in path if isinstance(entry, str)]
    return files


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
