"""The state store on SQLite: records, the generation counter, the promotion lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from kingpost.errors import ConflictError, InvalidRequestError, NotFoundError
from kingpost.platform import bundle
from kingpost.platform.settings import Autoscaling
from kingpost.platform.store import StateStore
from tests.platform.conftest import MODELS


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path / 'state.db'}")


def test_a_model_comes_with_production_and_every_write_bumps_the_generation(
    store: StateStore,
) -> None:
    start = store.generation()
    model = store.create_model("echo")
    assert store.generation() == start + 1
    snapshot = store.snapshot()
    assert snapshot.model("echo") == snapshot.model(model.id) == model
    assert [env.name for env in snapshot.environments_of(model.id)] == ["production"]


def test_names_are_checked_and_unique(store: StateStore) -> None:
    store.create_model("echo")
    with pytest.raises(ConflictError):
        store.create_model("echo")
    with pytest.raises(InvalidRequestError):
        store.create_model("no.dots")
    model = store.snapshot().model("echo")
    with pytest.raises(InvalidRequestError):
        store.create_environment(model.id, "development", Autoscaling())
    with pytest.raises(InvalidRequestError):
        store.delete_environment(model.id, "production")
    with pytest.raises(NotFoundError):
        store.delete_environment(model.id, "staging")


def test_deployments_keep_their_archive_and_the_development_one_is_replaced(
    store: StateStore,
) -> None:
    model = store.create_model("echo")
    archive = bundle.pack(MODELS / "versioned")
    first = store.add_deployment(model.id, "d1", "/src", archive, False)
    assert store.archive(first.id) == archive
    dev = store.add_deployment(model.id, "d2", "/one", None, True)
    again = store.add_deployment(model.id, "d3", "/two", None, True)
    assert again.id == dev.id
    assert store.snapshot().development_of(model.id).source == "/two"  # type: ignore[union-attr]


def test_one_promotion_holds_an_environment_at_a_time(store: StateStore) -> None:
    model = store.create_model("echo")
    deployment = store.add_deployment(model.id, "d", "/src", b"", False)
    store.lock_promotion(model.id, "production", "a", 60)
    with pytest.raises(ConflictError):
        store.lock_promotion(model.id, "production", "b", 60)
    assert store.snapshot().environment(model.id, "production").promoting
    store.finish_promotion(model.id, "production", "a", deployment.id)
    env = store.snapshot().environment(model.id, "production")
    assert env.deployment_id == deployment.id and not env.promoting
    store.lock_promotion(model.id, "production", "b", 60)  # free again


def test_the_digest_covers_names_and_contents_only(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    bundle.unpack(bundle.pack(MODELS / "versioned"), copy)
    assert bundle.digest(copy) == bundle.digest(MODELS / "versioned")
    (copy / "model" / "version.txt").write_text("other")
    assert bundle.digest(copy) != bundle.digest(MODELS / "versioned")
