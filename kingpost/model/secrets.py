"""Read-only access to the secrets a model declares in config.yaml."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from kingpost.errors import SecretNotFoundError
from kingpost.logs import register_secret

DEFAULT_SECRETS_DIR = Path("/secrets")
SECRET_ENV_PREFIX = "TRUSS_SECRET_"


class Secrets(Mapping[str, str]):
    """Secrets declared under ``secrets:``, read from files or the environment.

    A value comes from the file ``<secrets_dir>/<name>`` or, failing that, the
    environment variable ``TRUSS_SECRET_<name>``. Reading an undeclared or
    missing secret raises SecretNotFoundError with a message saying where to put it.

        secrets = Secrets({"hf_token"}, Path("/secrets"))
        token = secrets["hf_token"]
    """

    def __init__(self, declared: set[str] | list[str], secrets_dir: Path = DEFAULT_SECRETS_DIR):
        self._declared = frozenset(declared)
        self._dir = secrets_dir

    def __getitem__(self, name: str) -> str:
        if name not in self._declared:
            raise SecretNotFoundError(
                f"secret '{name}' is not declared; add it under 'secrets:' in config.yaml"
            )
        value = self._read(name)
        if value is None:
            raise SecretNotFoundError(
                f"secret '{name}' has no value: put it in the file {self._dir / name} "
                f"or in the environment variable {SECRET_ENV_PREFIX}{name}"
            )
        return value

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        if name not in self._declared:
            return default
        value = self._read(name)
        return default if value is None else value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._declared and self._read(name) is not None

    def __iter__(self) -> Iterator[str]:
        return (name for name in sorted(self._declared) if self._read(name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:  # never print values
        return f"Secrets({sorted(self._declared)!r})"

    def _read(self, name: str) -> str | None:
        path = self._dir / name
        try:
            value: str | None = path.read_text().strip()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
            value = os.environ.get(SECRET_ENV_PREFIX + name)
        if value:
            register_secret(value)  # whatever the model does with it, no log line shows it
        return value
