"""requirements / requirements_file: unmet ones named at start; --install cannot break Kingpost."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from importlib import metadata
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from kingpost.config import parse_config
from kingpost.errors import ConfigError
from kingpost.model.requirements import (
    check_requirements,
    declared_requirements,
    find_conflicts,
    kingpost_dependencies,
)
from kingpost.testing import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
COMPAT = Path(__file__).resolve().parent / "models" / "truss_compat"


def test_an_absent_package_is_missing_by_name() -> None:
    report = check_requirements(["httpx", "kingpost-no-such-package>=1.0"])
    assert report.missing == ["kingpost-no-such-package>=1.0"]
    assert "kingpost-no-such-package>=1.0 (not installed)" in report.describe_unmet()
    assert "--install" in report.describe_unmet()


def test_a_version_outside_the_specifier_is_a_mismatch_not_missing() -> None:
    report = check_requirements(["httpx<0.0.1"])
    assert report.missing == []
    assert report.mismatched[0].startswith("httpx<0.0.1 (installed: ")


def test_requirements_for_other_platforms_are_skipped() -> None:
    report = check_requirements(['kingpost-no-such-package; sys_platform == "plan9"'])
    assert report.satisfied


def test_lines_without_a_package_name_are_left_to_pip() -> None:
    report = check_requirements(["--extra-index-url https://example.com", "./local/dir"])
    assert report.satisfied
    assert len(report.unchecked) == 2


def test_a_requirements_file_is_read_without_comments(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("# pinned\nhttpx  # client\n\norjson>=3\n")
    config = parse_config({"requirements_file": "requirements.txt"})
    assert declared_requirements(tmp_path, config) == ["httpx", "orjson>=3"]


def test_a_missing_requirements_file_is_a_config_error(tmp_path: Path) -> None:
    config = parse_config({"requirements_file": "nope.txt"})
    with pytest.raises(ConfigError, match="requirements_file"):
        declared_requirements(tmp_path, config)


def write_model(directory: Path, requirement: str) -> Path:
    (directory / "model").mkdir(parents=True)
    (directory / "config.yaml").write_text(f"requirements:\n  - {requirement}\n")
    (directory / "model" / "model.py").write_text(
        "import kp_demo_dependency\n\n\n"
        "class Model:\n"
        "    def predict(self, model_input):\n"
        "        return kp_demo_dependency.VALUE\n"
    )
    return directory


def build_wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel, so that installing it needs no index."""
    name, version = "kp_demo_dependency", "1.0"
    dist_info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    files = {
        f"{name}/__init__.py": b"VALUE = 'installed by kingpost'\n",
        f"{dist_info}/METADATA": metadata.encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel


def serve_until_exit(model: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``kingpost serve`` expecting it to refuse to start; its output."""
    result = subprocess.run(
        [sys.executable, "-m", "kingpost", "serve", str(model), "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_serve_names_a_missing_requirement_and_exits(tmp_path: Path) -> None:
    output = serve_until_exit(write_model(tmp_path / "m", "kp-demo-dependency==1.0"))
    assert "requirements not met: kp-demo-dependency==1.0 (not installed)" in output
    assert "--install" in output


def test_serve_refuses_an_installed_version_the_requirement_excludes(tmp_path: Path) -> None:
    output = serve_until_exit(write_model(tmp_path / "m", "httpx<0.0.1"))
    assert f"requirements not met: httpx<0.0.1 (installed: {version('httpx')})" in output


def test_a_conflict_names_the_models_side_and_kingposts() -> None:
    conflicts = find_conflicts(["pydantic<2.0", "numpy", "httpx"], kingpost_dependencies())
    assert len(conflicts) == 1
    assert conflicts[0].startswith("`pydantic<2.0` conflicts with Kingpost's `pydantic>=2.6`")


def test_a_requirement_of_a_dependency_of_a_dependency_is_kept_too() -> None:
    pinned = version("pydantic-core")
    conflicts = find_conflicts(["pydantic-core==0.1"], kingpost_dependencies())
    assert conflicts == [
        f"`pydantic-core==0.1` conflicts with `pydantic-core=={pinned}` "
        f"(through pydantic {version('pydantic')})"
    ]


@pytest.mark.parametrize("flag", ["--install", "--install-in-place"])
def test_install_refuses_a_conflicting_requirement_before_installing_anything(
    tmp_path: Path, flag: str
) -> None:
    before = version("pydantic")
    output = serve_until_exit(
        COMPAT / "pinned_old_pydantic", flag, env={"KINGPOST_CACHE": str(tmp_path)}
    )
    assert "`pydantic<2.0` conflicts with Kingpost's `pydantic>=2.6`" in output
    assert "installing requirements" not in output
    assert version("pydantic") == before
    assert not (tmp_path / "envs").exists() or not any((tmp_path / "envs").iterdir())


def write_installing_model(directory: Path, *requirements: str) -> Path:
    write_model(directory, requirements[0])
    lines = "".join(f"  - {line}\n" for line in requirements)
    (directory / "config.yaml").write_text(f"requirements:\n{lines}")
    return directory


def test_install_builds_one_cached_environment_per_requirement_set(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    demo = f"kp-demo-dependency @ {wheel.as_uri()}"
    first = write_installing_model(tmp_path / "a", demo)
    second = write_installing_model(tmp_path / "b", demo, "httpx")
    env = {"KINGPOST_CACHE": str(tmp_path / "cache"), "UV_OFFLINE": "1", "PIP_NO_INDEX": "1"}
    for model, attempt in ((first, "building"), (first, "using"), (second, "building")):
        with ServerProcess(model, "--install", env=env, startup_timeout=120) as server:
            assert httpx.post(server.url("/predict"), json={}).json() == "installed by kingpost"
            assert f"{attempt} the model environment" in server.logs()
    built = sorted((tmp_path / "cache" / "envs").glob("*/lib/python*/site-packages"))
    assert len(built) == 2
    assert all((site / "kp_demo_dependency").is_dir() for site in built)
    assert not list((tmp_path / "cache" / "envs").glob("*/lib/python*/site-packages/httpx"))
    with pytest.raises(metadata.PackageNotFoundError):
        version("kp-demo-dependency")  # Kingpost's own environment is left as it was


@pytest.fixture
def scratch_python(tmp_path: Path) -> Callable[[], list[str]]:
    """A fresh venv that sees this environment's packages but installs into its own."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return lambda: [str(venv / "bin" / "python"), "-m", "kingpost", "serve"]


def test_install_in_place_puts_the_requirements_in_kingposts_environment(
    tmp_path: Path, scratch_python: Callable[[], list[str]]
) -> None:
    wheel = build_wheel(tmp_path)
    model = write_model(tmp_path / "m", f"kp-demo-dependency @ {wheel.as_uri()}")
    paths = [str(ROOT), sysconfig.get_paths()["purelib"]]
    env = {"PYTHONPATH": ":".join(paths), "PIP_NO_INDEX": "1", "UV_OFFLINE": "1"}
    with ServerProcess(
        model, "--install-in-place", command=scratch_python(), env=env, startup_timeout=120
    ) as server:
        assert httpx.post(server.url("/predict"), json={}).json() == "installed by kingpost"
        assert "installing requirements" in server.logs()
    installed = list((tmp_path / "venv").glob("lib/python*/site-packages/kp_demo_dependency"))
    assert installed, "the install goes into the scratch environment, not this one"
