"""kingpost.yaml: applied by ``kingpost up FILE`` and ``kingpost apply FILE``, idempotently."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from kingpost.errors import InvalidRequestError
from kingpost.platform.declarative import load_file
from tests.platform.conftest import ROOT, PlatformProcess, model_copy, wait_for


def test_the_documented_example_is_valid() -> None:
    declared = load_file(ROOT / "examples" / "platform" / "kingpost.yaml")
    assert declared.models["echo"].directory == ROOT / "examples" / "echo"
    assert declared.models["echo"].environments["production"].concurrency_target == 4
    assert declared.models["parrot"].development
    assert declared.platform.park_timeout == 60
    assert declared.platform.key_quota is not None and declared.platform.key_quota.concurrency == 32
    assert declared.platform.model_quotas is not None
    assert declared.platform.model_quotas["echo"].rate == 500


def test_a_bad_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "kingpost.yaml"
    path.write_text("models:\n  echo:\n    environments:\n      production: {max_replica: 0}\n")
    with pytest.raises(InvalidRequestError, match=r"models\.echo\.environments\.production"):
        load_file(path)


def test_up_applies_the_file_and_apply_deploys_only_what_changed(
    home: Path, tmp_path: Path
) -> None:
    directory = model_copy(tmp_path, "decl")
    file = tmp_path / "kingpost.yaml"
    file.write_text(
        "models:\n"
        "  declared:\n"
        "    directory: decl\n"
        "    deploy_to: [production, staging]\n"
        "    environments:\n"
        "      production: {min_replica: 1, max_replica: 2}\n"
        "      staging: {}\n"
    )
    platform = PlatformProcess(home, str(file)).start()
    try:

        def version(env: str) -> str | None:
            reply = httpx.post(platform.url(f"/models/declared/{env}/predict"), json={})
            return reply.json()["version"] if reply.status_code == 200 else None

        wait_for(lambda: version("production") == "v1", 60, "production from the file")
        wait_for(lambda: version("environments/staging") == "v1", 60, "staging from the file")
        settings = platform.admin.autoscaling("declared", "production")
        assert settings["min_replica"] == 1 and settings["max_replica"] == 2
        unchanged = platform.cli("apply", str(file))
        assert unchanged.returncode == 0, unchanged.stderr
        assert unchanged.stdout.strip() == "nothing to change"
        (directory / "model" / "version.txt").write_text("v2")
        changed = platform.cli("apply", str(file), "--json")
        assert changed.returncode == 0, changed.stderr
        assert "promoting to production" in changed.stdout
        assert version("production") == "v2" and version("environments/staging") == "v2"
        assert len(platform.admin.deployments("declared")) == 2
    finally:
        platform.close()
