"""The Python packages a model directory declares, checked against this environment.

``requirements:`` and ``requirements_file:`` are what an image build would
install. Locally, ``kingpost serve --install`` installs them into the running
interpreter's environment with pip; without it, a missing package is reported
by name before the model is imported.

    report = check_requirements(declared_requirements(model_dir, config))
    if report.missing:
        raise MissingRequirementsError(report.describe_missing())
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from kingpost.config import ModelConfig
from kingpost.errors import ConfigError, InstallError, MissingRequirementsError

logger = logging.getLogger("kingpost")


@dataclass
class RequirementsReport:
    """The outcome of comparing declared requirements with installed distributions."""

    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    @property
    def satisfied(self) -> bool:
        return not self.missing and not self.mismatched

    def describe_missing(self) -> str:
        names = ", ".join(self.missing)
        return (
            f"missing requirements: {names}. Install them with "
            f"'kingpost serve DIR --install' or 'pip install {' '.join(self.missing)}'"
        )


def declared_requirements(model_dir: Path, config: ModelConfig) -> list[str]:
    """The requirement lines from ``requirements`` or ``requirements_file``."""
    if not config.requirements_file:
        return [line.strip() for line in config.requirements if line.strip()]
    path = model_dir / config.requirements_file
    if not path.is_file():
        raise ConfigError(f"config.yaml field 'requirements_file': {path} does not exist")
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def check_requirements(lines: list[str]) -> RequirementsReport:
    """Compare each requirement with the installed distribution of that name."""
    report = RequirementsReport()
    for line in lines:
        if line.startswith("-"):  # pip options (-r, --extra-index-url, -e ...)
            report.unchecked.append(line)
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:  # a bare URL or path: pip knows its name, we do not
            report.unchecked.append(line)
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            report.missing.append(line)
            continue
        if requirement.specifier and not requirement.specifier.contains(
            installed, prereleases=True
        ):
            report.mismatched.append(f"{line} (installed: {installed})")
    return report


def install_requirements(model_dir: Path, config: ModelConfig) -> None:
    """``pip install`` the declared requirements into this interpreter's environment."""
    lines = declared_requirements(model_dir, config)
    if not lines:
        return
    if check_requirements(lines).satisfied:
        logger.info("requirements already satisfied")
        return
    if config.requirements_file:
        target = ["-r", str(model_dir / config.requirements_file)]
    else:
        target = lines
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *target]
    logger.info("installing requirements: %s", " ".join(target))
    result = subprocess.run(command, cwd=model_dir, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise InstallError("pip install failed:\n" + "\n".join(output))


def verify_requirements(model_dir: Path, config: ModelConfig) -> None:
    """Refuse to go on when a requirement is missing; warn on version mismatches."""
    report = check_requirements(declared_requirements(model_dir, config))
    for line in report.mismatched:
        logger.warning("requirement not met by the installed version: %s", line)
    if report.missing:
        raise MissingRequirementsError(report.describe_missing())
