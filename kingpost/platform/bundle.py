"""A model directory as one archive: what a deployment keeps, and its content digest.

The digest covers file names and contents only (not times), so the same
directory gives the same digest on any machine: ``kingpost apply`` uses it to
deploy only what changed.

    archive = pack(Path("examples/echo"))
    unpack(archive, home / "deployments" / deployment_id)
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

from kingpost.errors import InvalidRequestError

_SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".venv", "node_modules", ".mypy_cache"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def model_files(directory: Path) -> Iterator[Path]:
    """The files of a model directory, sorted, without caches and version control."""
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part in _SKIPPED_DIRS for part in relative.parts):
            continue
        if path.is_file() and not path.name.endswith(_SKIPPED_SUFFIXES):
            yield path


def digest(directory: Path) -> str:
    """sha256 over the names and contents of ``model_files``."""
    sha = hashlib.sha256()
    for path in model_files(directory):
        name = path.relative_to(directory).as_posix().encode()
        sha.update(len(name).to_bytes(4, "big") + name)
        data = path.read_bytes()
        sha.update(len(data).to_bytes(8, "big") + data)
    return sha.hexdigest()


def check_model_dir(directory: Path) -> None:
    if not directory.is_dir():
        raise InvalidRequestError(f"{directory} is not a directory")
    if not (directory / "config.yaml").is_file():
        raise InvalidRequestError(f"{directory} has no config.yaml")


def pack(directory: Path) -> bytes:
    """A gzipped tar of ``model_files``, with names relative to ``directory``."""
    check_model_dir(directory)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for path in model_files(directory):
            tar.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
    return buffer.getvalue()


def unpack(archive: bytes, target: Path) -> None:
    """Extract ``archive`` into ``target`` (replaced if it exists), refusing unsafe names."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(partial, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise InvalidRequestError(f"the model archive cannot be read: {exc}") from None
    check_model_dir(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
