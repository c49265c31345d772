"""requirements / requirements_file: missing ones named before load; --install installs them."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from kingpost.config import parse_config
from kingpost.errors import ConfigError
from kingpost.model.requirements import check_requirements, declared_requirements
from kingpost.testing import ServerProcess

ROOT = Path(__file__).resolve().parent.parent


def test_an_absent_package_is_missing_by_name() -> None:
    report = check_requirements(["httpx", "kingpost-no-such-package>=1.0"])
    assert report.missing == ["kingpost-no-such-package>=1.0"]
    assert "kingpost-no-such-package" in report.describe_missing()
    assert "--install" in report.describe_missing()


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


def test_serve_names_a_missing_requirement_and_exits(tmp_path: Path) -> None:
    model = write_model(tmp_path / "m", "kp-demo-dependency==1.0")
    result = subprocess.run(
        [sys.executable, "-m", "kingpost", "serve", str(model), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "missing requirements: kp-demo-dependency==1.0" in result.stderr
    assert "--install" in result.stderr


@pytest.fixture
def scratch_python(tmp_path: Path) -> Callable[[], list[str]]:
    """A fresh venv that sees this environment's packages but installs into its own."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return lambda: [str(venv / "bin" / "python"), "-m", "kingpost", "serve"]


def test_install_puts_the_requirements_in_the_environment_and_serves(
    tmp_path: Path, scratch_python: Callable[[], list[str]]
) -> None:
    wheel = build_wheel(tmp_path)
    model = write_model(tmp_path / "m", f"kp-demo-dependency @ {wheel.as_uri()}")
    paths = [str(ROOT), sysconfig.get_paths()["purelib"]]
    env = {"PYTHONPATH": ":".join(paths), "PIP_NO_INDEX": "1"}
    with ServerProcess(
        model, "--install", command=scratch_python(), env=env, startup_timeout=120
    ) as server:
        assert httpx.post(server.url("/predict"), json={}).json() == "installed by kingpost"
        assert "installing requirements" in server.logs()
    installed = list((tmp_path / "venv").glob("lib/python*/site-packages/kp_demo_dependency"))
    assert installed, "pip should install into the scratch environment, not this one"
