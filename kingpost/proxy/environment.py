"""What a custom server's command sees: environment variables and secrets.

Secrets reach the command the two ways the hosted platform offers them: as
files ``$KINGPOST_SECRETS_DIR/<name>`` and as environment variables
``TRUSS_SECRET_<name>``. When every secret already is a file in Kingpost's
secrets directory (``--secrets-dir``, default /secrets), the command is pointed
there; otherwise the values are written to a private directory of their own.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from kingpost.errors import ConfigError
from kingpost.model.secrets import SECRET_ENV_PREFIX, Secrets

SECRETS_DIR_VARIABLE = "KINGPOST_SECRETS_DIR"


class ChildSecrets:
    """The declared secrets that have a value, laid out for the command."""

    def __init__(self, declared: Iterable[str], secrets_dir: Path) -> None:
        names = sorted(set(declared))
        for name in names:
            if not name or "/" in name or name in (".", ".."):
                raise ConfigError(f"secrets: {name!r} cannot be a file name")
        source = Secrets(set(names), secrets_dir)
        self.values = {name: value for name in names if (value := source.get(name)) is not None}
        self._owned_dir: Path | None = None
        if all((secrets_dir / name).is_file() for name in self.values):
            self.directory = secrets_dir
        else:
            self.directory = self._owned_dir = Path(tempfile.mkdtemp(prefix="kingpost-secrets-"))
            for name, value in self.values.items():
                path = self.directory / name
                path.touch(mode=0o600)
                path.write_text(value)

    @property
    def environ(self) -> dict[str, str]:
        env = {SECRET_ENV_PREFIX + name: value for name, value in self.values.items()}
        env[SECRETS_DIR_VARIABLE] = str(self.directory)
        return env

    def remove(self) -> None:
        """Delete the directory if Kingpost made it."""
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None


def child_environment(
    variables: Mapping[str, str], secrets: ChildSecrets, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Kingpost's environment, then config's ``environment_variables``, then the secrets.

    The directory of the Python running Kingpost goes first on PATH, as if its
    virtualenv were activated, so that ``python`` in a start command is the
    interpreter that has the model's packages.
    """
    env = {**(os.environ if base is None else base), **variables, **secrets.environ}
    python_bin = os.path.dirname(sys.executable)
    path = env.get("PATH", "")
    if python_bin and path.split(os.pathsep)[0] != python_bin:
        env["PATH"] = python_bin + os.pathsep + path if path else python_bin
    env.setdefault("PYTHONUNBUFFERED", "1")  # a Python server's lines reach the log at once
    return env
