from __future__ import annotations

from pathlib import Path

import pytest

from kingpost.errors import SecretNotFoundError
from kingpost.model.secrets import Secrets


def test_a_secret_is_read_from_its_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("abc\n")
    assert Secrets({"token"}, tmp_path)["token"] == "abc"


def test_a_secret_falls_back_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUSS_SECRET_token", "from-env")
    assert Secrets({"token"}, tmp_path)["token"] == "from-env"


def test_an_undeclared_secret_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "other").write_text("x")
    with pytest.raises(SecretNotFoundError, match="'other' is not declared"):
        Secrets({"token"}, tmp_path)["other"]


def test_a_missing_secret_names_both_places_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(SecretNotFoundError) as info:
        Secrets({"token"}, tmp_path)["token"]
    assert str(tmp_path / "token") in str(info.value)
    assert "TRUSS_SECRET_token" in str(info.value)


def test_secrets_are_read_only_and_never_printed(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("hidden")
    secrets = Secrets({"token"}, tmp_path)
    assert "hidden" not in repr(secrets)
    with pytest.raises(TypeError):
        secrets["token"] = "x"  # type: ignore[index]
