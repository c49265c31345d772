"""The Python packages a model directory declares, checked against this environment.

``requirements:`` and ``requirements_file:`` are what an image build would
install. Locally a declared requirement the environment does not meet stops
the server at start, naming it. ``kingpost serve --install`` installs them into
a per-model environment (``kingpost.model.environment``);
``--install-in-place`` into the interpreter Kingpost runs in. Either way
Kingpost's own dependencies stay as installed: a requirement that conflicts
with them is refused before anything is installed, and the installer runs
under constraints pinning them.

    report = check_requirements(declared_requirements(model_dir, config))
    if not report.satisfied:
        raise MissingRequirementsError(report.describe_unmet())
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from kingpost.config import ModelConfig
from kingpost.errors import (
    ConfigError,
    InstallError,
    MissingRequirementsError,
    RequirementConflictError,
)

logger = logging.getLogger("kingpost")


@dataclass
class RequirementsReport:
    """The outcome of comparing declared requirements with installed distributions."""

    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    met: list[str] = field(default_factory=list)  # installed, or not for this platform

    @property
    def satisfied(self) -> bool:
        return not self.missing and not self.mismatched

    def describe_unmet(self) -> str:
        unmet = [f"{line} (not installed)" for line in self.missing] + self.mismatched
        return (
            f"requirements not met: {', '.join(unmet)}. Serve with 'kingpost serve DIR "
            "--install' to install them into an environment for this model"
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


def parse_requirement(line: str) -> Requirement | None:
    """The requirement on this line, or None for pip options, URLs and paths."""
    if line.startswith("-"):  # pip options (-r, --extra-index-url, -e ...)
        return None
    try:
        return Requirement(line)
    except InvalidRequirement:  # a bare URL or path: pip knows its name, we do not
        return None


def _applies(requirement: Requirement, extras: set[str] | None = None) -> bool:
    if requirement.marker is None:
        return True
    try:
        return any(requirement.marker.evaluate({"extra": e}) for e in (extras or {""}))
    except UndefinedEnvironmentName:
        return False


def check_requirements(lines: list[str]) -> RequirementsReport:
    """Compare each requirement with the installed distribution of that name."""
    report = RequirementsReport()
    for line in lines:
        requirement = parse_requirement(line)
        if requirement is None:
            report.unchecked.append(line)
            continue
        if not _applies(requirement):
            report.met.append(line)
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
        else:
            report.met.append(line)
    return report


def verify_requirements(model_dir: Path, config: ModelConfig) -> None:
    """Refuse to go on when a declared requirement is missing or at a version it excludes."""
    report = check_requirements(declared_requirements(model_dir, config))
    if not report.satisfied:
        raise MissingRequirementsError(report.describe_unmet())


@dataclass(frozen=True)
class PinnedDependency:
    """One distribution Kingpost runs on: its installed version and who requires it how."""

    name: str
    version: str
    required_as: tuple[tuple[str, str], ...]  # (requirement, required by)

    def describe(self) -> str:
        parts = []
        for requirement, by in self.required_as:
            parts.append(
                f"Kingpost's `{requirement}`" if by == "kingpost" else f"`{requirement}` ({by})"
            )
        return " and ".join(parts)


def kingpost_dependencies() -> dict[str, PinnedDependency]:
    """Kingpost's installed runtime dependencies, transitively, by canonical name."""
    found: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    pending: list[tuple[Requirement, str]] = [
        (requirement, "kingpost") for requirement in _kingpost_requirements()
    ]
    while pending:
        requirement, by = pending.pop()
        name = canonicalize_name(requirement.name)
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            continue  # not installed, so nothing to keep
        as_text = f"{name}{requirement.specifier}" if requirement.specifier else name
        if name in found:
            if (as_text, by) not in found[name][1]:
                found[name][1].append((as_text, by))
            continue
        found[name] = (distribution.version, [(as_text, by)])
        extras = {"", *requirement.extras}
        for line in distribution.requires or []:
            child = Requirement(line)
            if _applies(child, extras):
                pending.append((child, f"through {name} {distribution.version}"))
    return {
        name: PinnedDependency(name, version, tuple(required_as))
        for name, (version, required_as) in found.items()
    }


def _kingpost_requirements() -> list[Requirement]:
    try:
        lines = metadata.requires("kingpost") or []
    except metadata.PackageNotFoundError:  # run from a source tree: read its pyproject
        import tomllib

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        if not pyproject.is_file():
            return []
        lines = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    requirements = [Requirement(line) for line in lines]
    return [r for r in requirements if _applies(r)]


def constraint_lines(dependencies: dict[str, PinnedDependency]) -> list[str]:
    """Pins keeping each of Kingpost's dependencies at the version installed."""
    return [f"{name}=={pinned.version}" for name, pinned in sorted(dependencies.items())]


def find_conflicts(lines: list[str], dependencies: dict[str, PinnedDependency]) -> list[str]:
    """Each declared requirement that would change one of Kingpost's dependencies, explained."""
    conflicts = []
    for line in lines:
        requirement = parse_requirement(line)
        if requirement is None or not _applies(requirement):
            continue
        pinned = dependencies.get(canonicalize_name(requirement.name))
        if pinned is None or requirement.specifier.contains(pinned.version, prereleases=True):
            continue
        ranges = [SpecifierSet(text[len(pinned.name) :]) for text, _ in pinned.required_as]
        if not _overlap(requirement.specifier, ranges):
            # Name the requirements of Kingpost's that this one excludes on its own.
            clashing = tuple(
                entry
                for entry, spec in zip(pinned.required_as, ranges, strict=True)
                if not _overlap(requirement.specifier, [spec])
            )
            sides = PinnedDependency(pinned.name, pinned.version, clashing or pinned.required_as)
            conflicts.append(f"`{line}` conflicts with {sides.describe()}")
        else:
            conflicts.append(
                f"`{line}` excludes {pinned.name} {pinned.version}, which Kingpost runs with "
                f"({pinned.describe()}); upgrade it in Kingpost's environment first"
            )
    return conflicts


def _overlap(wanted: SpecifierSet, ranges: list[SpecifierSet]) -> bool:
    """Whether some version plausibly meets ``wanted`` and every range (boundaries tried)."""
    candidates: set[Version] = set()
    for specifiers in [wanted, *ranges]:
        for specifier in specifiers:
            try:
                version = Version(specifier.version.rstrip(".*"))
            except InvalidVersion:
                continue
            release = list(version.release)
            candidates.add(version)
            candidates.add(Version(".".join(map(str, [*release[:-1], release[-1] + 1]))))
            candidates.add(Version(".".join(map(str, [*release, 1]))))
    combined = [wanted, *ranges]
    return any(all(s.contains(v, prereleases=True) for s in combined) for v in candidates)


def refuse_conflicts(lines: list[str], dependencies: dict[str, PinnedDependency]) -> None:
    conflicts = find_conflicts(lines, dependencies)
    if conflicts:
        raise RequirementConflictError(
            "not installing the model's requirements: " + "; ".join(conflicts)
        )


def run_installer(
    python: str, lines: list[str], constraints: list[str], workdir: Path, scratch: Path
) -> None:
    """Install ``lines`` for the interpreter ``python`` under ``constraints`` (uv, else pip)."""
    scratch.mkdir(parents=True, exist_ok=True)
    requirements_file = scratch / "requirements.txt"
    constraints_file = scratch / "constraints.txt"
    requirements_file.write_text("\n".join(lines) + "\n")
    constraints_file.write_text("\n".join(constraints) + "\n")
    files = ["-r", str(requirements_file), "-c", str(constraints_file)]
    try:
        from uv import find_uv_bin

        command = [find_uv_bin(), "pip", "install", "--python", python, *files]
    except (ImportError, FileNotFoundError):
        command = [sys.executable, "-m", "pip", "--python", python, "install"]
        command += ["--disable-pip-version-check", *files]
    logger.info("installing requirements: %s", " ".join(lines))
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise InstallError(f"{Path(command[0]).name} install failed:\n" + "\n".join(output))


def install_requirements(model_dir: Path, config: ModelConfig) -> None:
    """Install the declared requirements into this interpreter's environment, in place."""
    lines = declared_requirements(model_dir, config)
    if not lines:
        return
    if check_requirements(lines).satisfied:
        logger.info("requirements already satisfied")
        return
    dependencies = kingpost_dependencies()
    refuse_conflicts(lines, dependencies)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kingpost-install-") as scratch:
        run_installer(
            sys.executable, lines, constraint_lines(dependencies), model_dir, Path(scratch)
        )
