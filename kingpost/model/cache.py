"""Weights and data files a model declares, resolved from a local cache.

``model_cache``, ``weights`` and ``external_data`` name files that a hosted
platform fetches while building or starting the image. Locally they come from
one cache directory, ``$KINGPOST_CACHE`` (default ``~/.cache/kingpost``):

    <cache>/hf/<owner>/<repo>/            a Hugging Face repository, as plain files
    <cache>/s3/<bucket>/<path>/           likewise for s3://, gs://, azure://
    <cache>/huggingface/                  the huggingface_hub cache Kingpost fills
    <cache>/external_data/<host>/<path>   a file named by URL

A Hugging Face repository missing from both places is downloaded with
huggingface_hub, unless ``HF_HUB_OFFLINE`` or ``KINGPOST_OFFLINE`` is set; a
file named by URL is downloaded with httpx. When nothing can be found, the
error names the repository and the directory to put its files in.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from kingpost.config import ModelConfig
from kingpost.errors import ModelFilesNotFoundError
from kingpost.model.secrets import DEFAULT_SECRETS_DIR, Secrets

logger = logging.getLogger("kingpost")

# Where a Truss image mounts `model_cache` volumes; overridable for local use.
DEFAULT_MODEL_CACHE_MOUNT = Path("/app/model_cache")
_SCHEMES = {"hf": "hf", "s3": "s3", "gs": "gcs", "gcs": "gcs", "azure": "azure"}


def cache_root() -> Path:
    configured = os.environ.get("KINGPOST_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "kingpost"


def offline() -> bool:
    return any(
        os.environ.get(name, "").lower() in ("1", "true", "yes")
        for name in ("KINGPOST_OFFLINE", "HF_HUB_OFFLINE")
    )


@dataclass
class ResolvedFiles:
    """Where each declared repository and file was found, and what was linked where."""

    repos: dict[str, Path] = field(default_factory=dict)
    links: dict[Path, Path] = field(default_factory=dict)


@dataclass
class FileCache:
    """Finds (or fetches) repositories and files under one cache root."""

    root: Path
    token: str | None = None

    def repository(
        self,
        kind: str,
        repo_id: str,
        revision: str | None = None,
        allow_patterns: list[str] | None = None,
        ignore_patterns: list[str] | None = None,
    ) -> Path:
        """The local directory holding ``repo_id``; ModelFilesNotFoundError if none."""
        plain = self.root / kind / repo_id
        if plain.is_dir():
            return plain
        reason = "offline"
        if kind == "hf":
            found, reason = self._hub_snapshot(repo_id, revision, allow_patterns, ignore_patterns)
            if found is not None:
                return found
        elif not offline():
            reason = f"Kingpost does not download from {kind}"
        at = f"@{revision}" if revision else ""
        raise ModelFilesNotFoundError(
            f"{kind} repository '{repo_id}{at}' is not in the local cache ({reason}); "
            f"put its files in {plain}"
        )

    def url(self, url: str) -> Path:
        """The cached copy of the file at ``url``, downloading it when allowed."""
        parts = urlsplit(url)
        path = self.root / "external_data" / parts.netloc / parts.path.lstrip("/")
        if path.is_file():
            return path
        if offline():
            reason = "offline"
        else:
            try:
                _download(url, path)
                return path
            except Exception as exc:  # no network, 404, ...: the error says where to put it
                reason = f"download failed: {type(exc).__name__}: {exc}"
        raise ModelFilesNotFoundError(
            f"file {url} is not in the local cache ({reason}); put it at {path}"
        )

    def _hub_snapshot(
        self,
        repo_id: str,
        revision: str | None,
        allow_patterns: list[str] | None,
        ignore_patterns: list[str] | None,
    ) -> tuple[Path | None, str]:
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            return None, "huggingface_hub is not installed"
        try:
            found = snapshot_download(
                repo_id,
                revision=revision or None,
                allow_patterns=allow_patterns,
                ignore_patterns=ignore_patterns,
                cache_dir=self.hub_cache,
                token=self.token,
                local_files_only=offline(),
            )
        except Exception as exc:  # LocalEntryNotFoundError, connection errors, auth errors
            kind = "offline" if offline() else f"{type(exc).__name__}"
            return None, f"{kind}; not found in {self.hub_cache} either"
        return Path(found), ""

    @property
    def hub_cache(self) -> Path:
        return self.root / "huggingface"


def resolve_model_files(
    model_dir: Path, config: ModelConfig, secrets_dir: Path = DEFAULT_SECRETS_DIR
) -> ResolvedFiles:
    """Make every declared repository and file available where the model expects it.

    ``model_cache`` entries with ``use_volume`` and ``weights`` entries are linked
    at their mount path; ``external_data`` files are linked into the data dir.
    """
    resolved = ResolvedFiles()
    if not (config.model_cache or config.weights or config.external_data):
        return resolved
    cache = FileCache(cache_root())
    if config.model_cache and "HF_HUB_CACHE" not in os.environ:
        # Models that call from_pretrained(repo_id) then read the same cache. Set
        # before huggingface_hub is first imported: it reads the variable once.
        os.environ["HF_HUB_CACHE"] = str(cache.hub_cache)
    secrets = Secrets(set(config.secrets), secrets_dir)
    for repo in config.model_cache:
        cache.token = secrets.get(repo.runtime_secret_name) or None
        path = cache.repository(
            repo.kind, repo.repo_id, repo.revision, repo.allow_patterns, repo.ignore_patterns
        )
        resolved.repos[repo.repo_id] = path
        if repo.use_volume and repo.volume_folder:
            mount = _model_cache_mount() / repo.volume_folder
            resolved.links[mount] = _link(mount, path)
    for source in config.weights:
        scheme, _, rest = source.source.partition("://")
        if scheme == "https" or scheme == "http":
            path = cache.url(source.source)
        else:
            kind = _SCHEMES.get(scheme)
            if kind is None:
                raise ModelFilesNotFoundError(f"weights source {source.source}: unknown scheme")
            repo_id, _, revision = rest.partition("@")
            cache.token = secrets.get(source.auth_secret_name or "hf_access_token") or None
            path = cache.repository(
                kind, repo_id, revision or None, source.allow_patterns, source.ignore_patterns
            )
        resolved.repos[source.source] = path
        mount = Path(source.mount_location)
        resolved.links[mount] = _link(mount, path)
    data_dir = model_dir / config.data_dir
    for item in config.external_data or []:
        target = data_dir / item.local_data_path
        if target.exists():
            continue
        resolved.links[target] = _link(target, cache.url(item.url))
    return resolved


def _model_cache_mount() -> Path:
    configured = os.environ.get("KINGPOST_MODEL_CACHE_PATH")
    return Path(configured) if configured else DEFAULT_MODEL_CACHE_MOUNT


def _link(at: Path, target: Path) -> Path:
    """Point ``at`` to ``target`` with a symlink, unless real files are already there."""
    if at.is_symlink():
        if at.resolve() == target.resolve():
            return target
        at.unlink()
    elif at.exists():
        logger.info("%s exists; using it as is", at)
        return at
    try:
        at.parent.mkdir(parents=True, exist_ok=True)
        at.symlink_to(target, target_is_directory=target.is_dir())
    except OSError as exc:
        raise ModelFilesNotFoundError(
            f"cannot make {target} available at {at}: {exc.strerror}; "
            f"create {at} (a copy or a link to {target}) yourself"
        ) from None
    return target


def _download(url: str, path: Path) -> None:
    import httpx

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with httpx.stream("GET", url, follow_redirects=True, timeout=30.0) as response:
        response.raise_for_status()
        with partial.open("wb") as out:
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
    partial.replace(path)
