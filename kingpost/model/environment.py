"""A model's own Python environment, built once per distinct requirement set and cached.

``kingpost serve DIR --install`` serves a model that declares requirements from
a virtual environment of its own, under ``<cache>/envs/<key>/`` (``<cache>`` is
``$KINGPOST_CACHE``, default ``~/.cache/kingpost``). The key hashes the
requirement lines, the interpreter and Kingpost's pinned dependencies, so models
declaring the same requirements share one environment and a changed line builds
a new one. The environment sees Kingpost's own environment behind its own
packages (a ``.pth`` file adds it), so Kingpost, its dependencies and ``uv``
import there; what the model needs beyond that is installed into it with uv
(pip where uv is absent), under constraints keeping Kingpost's dependencies at
their installed versions.

    python = model_environment(model_dir, config)   # built or reused; None: none needed
    os.execv(python, [python, "-m", "kingpost", *argv])
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import sysconfig
import time
import venv
from pathlib import Path

from kingpost.config import ModelConfig, load_config
from kingpost.errors import InstallError
from kingpost.model.cache import cache_root
from kingpost.model.requirements import (
    check_requirements,
    constraint_lines,
    declared_requirements,
    kingpost_dependencies,
    refuse_conflicts,
    run_installer,
)

logger = logging.getLogger("kingpost")

COMPLETE_MARKER = "kingpost-environment.json"
ENTERED = "KINGPOST_MODEL_ENV"  # set in the re-run process: the environment it runs in
BUILD_LOCK_TIMEOUT = 1800.0  # another process building the same environment


def environment_key(lines: list[str], constraints: list[str], base_paths: list[str]) -> str:
    """A digest of everything the environment's contents depend on."""
    identity = {
        "requirements": lines,
        "constraints": constraints,
        "python": sys.version,
        "platform": sysconfig.get_platform(),
        "base": base_paths,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def base_paths() -> list[str]:
    """Where Kingpost and its dependencies are imported from in this interpreter."""
    paths = sysconfig.get_paths()
    found = [paths["purelib"], paths["platlib"], str(Path(__file__).resolve().parents[2])]
    return list(dict.fromkeys(found))


def environment_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def inside(env_dir: Path) -> bool:
    return Path(sys.prefix).resolve() == env_dir.resolve()


def model_environment(model_dir: Path, config: ModelConfig) -> Path | None:
    """The interpreter of the model's environment, built if needed; None if it needs none.

    Raises ``RequirementConflictError`` (before anything is installed) when a
    requirement conflicts with Kingpost's own dependencies, ``InstallError``
    when the installer fails.
    """
    lines = declared_requirements(model_dir, config)
    if not lines:
        return None
    entered = os.environ.get(ENTERED)
    if entered and inside(Path(entered)):
        return environment_python(Path(entered))
    dependencies = kingpost_dependencies()
    constraints = constraint_lines(dependencies)
    bases = base_paths()
    env_dir = cache_root() / "envs" / environment_key(lines, constraints, bases)
    refuse_conflicts(lines, dependencies)
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(env_dir):
        if (env_dir / COMPLETE_MARKER).is_file():
            logger.info("using the model environment %s", env_dir)
        else:
            _build(env_dir, model_dir, lines, constraints, bases)
    return environment_python(env_dir)


def _build(
    env_dir: Path, model_dir: Path, lines: list[str], constraints: list[str], bases: list[str]
) -> None:
    started = time.perf_counter()
    logger.info("building the model environment %s", env_dir)
    shutil.rmtree(env_dir, ignore_errors=True)  # a build that died halfway
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = environment_python(env_dir)
    site_packages = Path(
        sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)})
    )
    # addsitedir (not a bare path) so the base's own .pth files (editable installs) apply too.
    adds = "; ".join(f"site.addsitedir({path!r})" for path in bases)
    (site_packages / "_kingpost_base.pth").write_text(f"import site; {adds}\n")
    # What Kingpost's environment already meets stays there; uv cannot see it from here.
    met = check_requirements(lines).met
    needed = [line for line in lines if line not in met]
    try:
        if needed:
            run_installer(str(python), needed, constraints, model_dir, env_dir / "kingpost")
    except InstallError:
        shutil.rmtree(env_dir, ignore_errors=True)
        raise
    record = {"requirements": lines, "installed": needed, "base": bases}
    (env_dir / COMPLETE_MARKER).write_text(json.dumps(record, indent=2) + "\n")
    logger.info("built the model environment in %.1f s", time.perf_counter() - started)


class _build_lock:
    """An exclusive lock on one environment's build, waited for with a deadline."""

    def __init__(self, env_dir: Path) -> None:
        self.path = env_dir.with_name(env_dir.name + ".lock")
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        deadline = time.monotonic() + BUILD_LOCK_TIMEOUT
        waiting = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise InstallError(
                        f"another process has been building {self.path.stem} for "
                        f"{BUILD_LOCK_TIMEOUT:.0f} s; remove {self.path} if none is"
                    ) from None
                if not waiting:
                    logger.info("waiting for another process building %s", self.path.stem)
                    waiting = True
                time.sleep(0.2)

    def __exit__(self, *exc_info: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def serve_in_model_environment(model_dir: Path, argv: list[str]) -> None:
    """Re-run ``kingpost argv`` in the model's environment (building it first), if it needs one.

    Returns only when the model declares no requirements or this process already
    runs in its environment; otherwise replaces the process (same PID).
    """
    config = load_config(model_dir.resolve())
    python = model_environment(model_dir.resolve(), config)
    if python is None or inside(python.parent.parent):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ[ENTERED] = str(python.parent.parent)
    os.execv(python, [str(python), "-m", "kingpost", *argv])
