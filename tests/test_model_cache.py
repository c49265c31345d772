"""model_cache / weights / external_data come from $KINGPOST_CACHE, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from kingpost.config import parse_config
from kingpost.model.cache import ModelFilesNotFoundError, resolve_model_files
from kingpost.testing import InProcessServer, ServerProcess


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("KINGPOST_CACHE", str(root))
    monkeypatch.setenv("KINGPOST_OFFLINE", "1")
    monkeypatch.setenv("KINGPOST_MODEL_CACHE_PATH", str(tmp_path / "app-model-cache"))
    # Resolution points HF_HUB_CACHE at the cache when unset; undo that afterwards.
    monkeypatch.setenv("HF_HUB_CACHE", "")
    monkeypatch.delenv("HF_HUB_CACHE")
    return root


def plain_repo(cache: Path, kind: str, repo_id: str) -> Path:
    path = cache / kind / repo_id
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"hidden_size": 8}')
    return path


def hub_repo(cache: Path, repo_id: str, commit: str = "0123abcd") -> Path:
    """A repository as huggingface_hub lays it out in its cache."""
    repo = cache / "huggingface" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "weights.bin").write_bytes(b"\x00\x01")
    return snapshot


def test_a_volume_model_cache_entry_is_linked_at_its_mount(cache: Path, tmp_path: Path) -> None:
    repo = plain_repo(cache, "hf", "org/tiny")
    config = parse_config(
        {"model_cache": [{"repo_id": "org/tiny", "use_volume": True, "volume_folder": "tiny"}]}
    )
    resolved = resolve_model_files(tmp_path, config)
    mount = tmp_path / "app-model-cache" / "tiny"
    assert resolved.repos["org/tiny"] == repo
    assert (mount / "config.json").read_text() == '{"hidden_size": 8}'


def test_model_cache_points_the_hub_cache_at_kingpost_cache(cache: Path, tmp_path: Path) -> None:
    hub_repo(cache, "org/tiny")
    resolved = resolve_model_files(
        tmp_path, parse_config({"model_cache": [{"repo_id": "org/tiny"}]})
    )
    assert resolved.repos["org/tiny"].name == "0123abcd"
    assert os.environ["HF_HUB_CACHE"] == str(cache / "huggingface")


def test_hf_weights_are_found_in_the_hub_cache_offline(cache: Path, tmp_path: Path) -> None:
    snapshot = hub_repo(cache, "org/tiny")
    mount = tmp_path / "mnt" / "tiny"
    config = parse_config(
        {"weights": [{"source": "hf://org/tiny@main", "mount_location": str(mount)}]}
    )
    resolve_model_files(tmp_path, config)
    assert mount.resolve() == snapshot.resolve()
    assert (mount / "weights.bin").read_bytes() == b"\x00\x01"


def test_a_plain_directory_wins_over_the_hub_cache(cache: Path, tmp_path: Path) -> None:
    hub_repo(cache, "org/tiny")
    plain = plain_repo(cache, "hf", "org/tiny")
    config = parse_config({"weights": [{"source": "hf://org/tiny", "mount_location": "/unused"}]})
    config.weights[0].mount_location = str(tmp_path / "w")
    assert resolve_model_files(tmp_path, config).repos["hf://org/tiny"] == plain


def test_a_missing_repository_names_itself_and_where_to_put_it(cache: Path, tmp_path: Path) -> None:
    config = parse_config({"model_cache": [{"repo_id": "org/absent", "revision": "v2"}]})
    with pytest.raises(ModelFilesNotFoundError) as missing:
        resolve_model_files(tmp_path, config)
    message = str(missing.value)
    assert "org/absent@v2" in message
    assert str(cache / "hf" / "org" / "absent") in message
    assert "offline" in message


def test_cloud_storage_weights_come_from_their_own_cache_directory(
    cache: Path, tmp_path: Path
) -> None:
    plain_repo(cache, "s3", "bucket/models/tiny")
    mount = tmp_path / "s3-tiny"
    config = parse_config(
        {"weights": [{"source": "s3://bucket/models/tiny", "mount_location": str(mount)}]}
    )
    resolve_model_files(tmp_path, config)
    assert (mount / "config.json").exists()
    config.weights[0].source = "gs://bucket/other"
    with pytest.raises(ModelFilesNotFoundError, match="put its files in"):
        resolve_model_files(tmp_path, config)


def test_external_data_is_linked_into_the_data_dir(cache: Path, tmp_path: Path) -> None:
    cached = cache / "external_data" / "example.com" / "files" / "vocab.txt"
    cached.parent.mkdir(parents=True)
    cached.write_text("a\nb\n")
    config = parse_config(
        {
            "external_data": [
                {"url": "https://example.com/files/vocab.txt", "local_data_path": "t/vocab.txt"}
            ]
        }
    )
    resolve_model_files(tmp_path / "model", config)
    assert (tmp_path / "model" / "data" / "t" / "vocab.txt").read_text() == "a\nb\n"


def test_missing_external_data_names_the_url_and_the_cache_path(
    cache: Path, tmp_path: Path
) -> None:
    config = parse_config(
        {"external_data": [{"url": "https://example.com/big.bin", "local_data_path": "big.bin"}]}
    )
    with pytest.raises(ModelFilesNotFoundError) as missing:
        resolve_model_files(tmp_path, config)
    assert "https://example.com/big.bin" in str(missing.value)
    assert str(cache / "external_data" / "example.com" / "big.bin") in str(missing.value)


def test_external_data_already_in_the_data_dir_needs_no_cache(cache: Path, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"here")
    config = parse_config(
        {"external_data": [{"url": "https://example.com/big.bin", "local_data_path": "big.bin"}]}
    )
    assert resolve_model_files(tmp_path, config).links == {}


def write_weights_model(directory: Path, mount: Path) -> Path:
    (directory / "model").mkdir(parents=True)
    (directory / "config.yaml").write_text(
        f"weights:\n  - source: hf://org/tiny@main\n    mount_location: {mount}\n"
    )
    (directory / "model" / "model.py").write_text(
        "from pathlib import Path\n\n\n"
        "class Model:\n"
        "    def __init__(self, **kwargs):\n"
        "        kwargs['lazy_data_resolver'].block_until_download_complete()\n\n"
        "    def load(self):\n"
        f"        self.size = len(Path({str(mount)!r}, 'weights.bin').read_bytes())\n\n"
        "    def predict(self, model_input):\n"
        "        return {'weights_bytes': self.size}\n"
    )
    return directory


def test_a_served_model_reads_its_weights_at_the_mount_location(
    start_in_process: Callable[..., InProcessServer], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    hub_repo(cache, "org/tiny")
    model = write_weights_model(tmp_path / "m", tmp_path / "mnt" / "tiny")
    server = start_in_process(model, env={"KINGPOST_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert server.client.post("/predict", json={}).json() == {"weights_bytes": 2}


def test_a_model_cache_model_finds_its_repository_through_huggingface_hub(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    snapshot = hub_repo(cache, "org/tiny")
    model = tmp_path / "m"
    (model / "model").mkdir(parents=True)
    (model / "config.yaml").write_text("model_cache:\n  - repo_id: org/tiny\n")
    # The usual Truss model: it asks huggingface_hub for the repository by name.
    (model / "model" / "model.py").write_text(
        "from huggingface_hub import snapshot_download\n\n\n"
        "class Model:\n"
        "    def load(self):\n"
        "        self.path = snapshot_download('org/tiny', local_files_only=True)\n\n"
        "    def predict(self, model_input):\n"
        "        return self.path\n"
    )
    server = start_server(model, env={"KINGPOST_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert httpx.post(server.url("/predict"), json={}).json() == str(snapshot)


def test_serve_refuses_to_start_when_weights_are_not_cached(tmp_path: Path) -> None:
    model = write_weights_model(tmp_path / "m", tmp_path / "mnt" / "tiny")
    result = subprocess.run(
        [sys.executable, "-m", "kingpost", "serve", str(model), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KINGPOST_CACHE": str(tmp_path / "c"), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    assert "hf repository 'org/tiny@main' is not in the local cache" in result.stderr
    assert str(tmp_path / "c" / "hf" / "org" / "tiny") in result.stderr
