"""The state store: models, deployments, environments, on SQLAlchemy Core.

One schema on two databases: an embedded SQLite file under ``--home`` (the
default) or a PostgreSQL server (``--state postgresql://...``), which lets
several platform processes share one state. Every write bumps a generation
counter in the same transaction, so a process learns that another one changed
something by reading one row. The hot path never reads the store: the platform
keeps a ``Snapshot`` in memory and refreshes it after writes.

    store = StateStore("sqlite:///tmp/state.db")
    model = store.create_model("echo")          # with its production environment
    store.snapshot().models[model.id].name      # 'echo'
"""

from __future__ import annotations

import re
import secrets
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kingpost.errors import ConflictError, InvalidRequestError, NotFoundError
from kingpost.platform.settings import Autoscaling

PRODUCTION = "production"
DEVELOPMENT = "development"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_ID_ALPHABET = string.ascii_lowercase + string.digits

metadata = sa.MetaData()

models_table = sa.Table(
    "kingpost_models",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

deployments_table = sa.Table(
    "kingpost_deployments",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model_id", sa.String(32), sa.ForeignKey("kingpost_models.id"), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("development", sa.Boolean, nullable=False, default=False),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Kept apart so that listing deployments never reads the archives.
files_table = sa.Table(
    "kingpost_deployment_files",
    metadata,
    sa.Column("deployment_id", sa.String(32), primary_key=True),
    sa.Column("archive", sa.LargeBinary, nullable=False),
)

environments_table = sa.Table(
    "kingpost_environments",
    metadata,
    sa.Column("model_id", sa.String(32), sa.ForeignKey("kingpost_models.id"), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("deployment_id", sa.String(32), nullable=True),
    sa.Column("autoscaling", sa.Text, nullable=False),
    sa.Column("promotion_owner", sa.String(64), nullable=True),
    sa.Column("promotion_until", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

meta_table = sa.Table(
    "kingpost_state",
    metadata,
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)


def new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def check_name(kind: str, name: str) -> str:
    if not NAME.match(name):
        raise InvalidRequestError(
            f"{kind} name {name!r} must be 1-63 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class ModelRecord:
    id: str
    name: str
    created_at: float


@dataclass(frozen=True)
class DeploymentRecord:
    id: str
    model_id: str
    digest: str
    source: str
    development: bool
    active: bool
    status: str
    error: str | None
    created_at: float


@dataclass(frozen=True)
class EnvironmentRecord:
    model_id: str
    name: str
    deployment_id: str | None
    autoscaling: Autoscaling
    promoting: bool
    created_at: float


@dataclass
class Snapshot:
    """The whole state but the archives, read in one go."""

    generation: int = 0
    models: dict[str, ModelRecord] = field(default_factory=dict)
    deployments: dict[str, DeploymentRecord] = field(default_factory=dict)
    environments: dict[tuple[str, str], EnvironmentRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_name = {model.name: model for model in self.models.values()}

    def find_model(self, key: str) -> ModelRecord | None:
        """A model by id, else by name."""
        return self.models.get(key) or self.by_name.get(key)

    def model(self, key: str) -> ModelRecord:
        model = self.find_model(key)
        if model is None:
            raise NotFoundError(f"model {key!r} not found")
        return model

    def deployment(self, deployment_id: str) -> DeploymentRecord:
        deployment = self.deployments.get(deployment_id)
        if deployment is None:
            raise NotFoundError(f"deployment {deployment_id!r} not found")
        return deployment

    def environment(self, model_id: str, name: str) -> EnvironmentRecord:
        env = self.environments.get((model_id, name))
        if env is None:
            model = self.models.get(model_id)
            label = model.name if model else model_id
            raise NotFoundError(f"environment {name!r} of model {label!r} not found")
        return env

    def development_of(self, model_id: str) -> DeploymentRecord | None:
        for deployment in self.deployments.values():
            if deployment.model_id == model_id and deployment.development:
                return deployment
        return None

    def environments_of(self, model_id: str) -> list[EnvironmentRecord]:
        return sorted(
            (env for env in self.environments.values() if env.model_id == model_id),
            key=lambda env: (env.name != PRODUCTION, env.name),
        )

    def environments_serving(self, deployment_id: str) -> list[EnvironmentRecord]:
        return [env for env in self.environments.values() if env.deployment_id == deployment_id]


class StateStore:
    """Reads and writes of the platform's state; each method is one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.engine = sa.create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}
            )
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True, pool_size=4)
        metadata.create_all(self.engine)
        try:
            with self.engine.begin() as conn:
                exists = conn.execute(
                    sa.select(meta_table.c.value).where(meta_table.c.key == "generation")
                ).first()
                if exists is None:
                    conn.execute(sa.insert(meta_table).values(key="generation", value=0))
        except sa.exc.IntegrityError:
            pass  # another process made it first

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn
            conn.execute(
                sa.update(meta_table)
                .where(meta_table.c.key == "generation")
                .values(value=meta_table.c.value + 1)
            )

    # -- reading ---------------------------------------------------------------

    def generation(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == "generation")
            ).scalar_one()
        return int(value)

    def snapshot(self) -> Snapshot:
        with self.engine.connect() as conn:
            generation = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == "generation")
            ).scalar_one()
            models = {
                row.id: ModelRecord(row.id, row.name, row.created_at)
                for row in conn.execute(sa.select(models_table))
            }
            deployments = {
                row.id: DeploymentRecord(
                    row.id,
                    row.model_id,
                    row.digest,
                    row.source,
                    bool(row.development),
                    bool(row.active),
                    row.status,
                    row.error,
                    row.created_at,
                )
                for row in conn.execute(sa.select(deployments_table))
            }
            now = time.time()
            environments = {
                (row.model_id, row.name): EnvironmentRecord(
                    row.model_id,
                    row.name,
                    row.deployment_id,
                    Autoscaling.model_validate(orjson.loads(row.autoscaling)),
                    row.promotion_until is not None and row.promotion_until > now,
                    row.created_at,
                )
                for row in conn.execute(sa.select(environments_table))
            }
        return Snapshot(int(generation), models, deployments, environments)

    def archive(self, deployment_id: str) -> bytes:
        with self.engine.connect() as conn:
            archive = conn.execute(
                sa.select(files_table.c.archive).where(files_table.c.deployment_id == deployment_id)
            ).scalar()
        if archive is None:
            raise NotFoundError(f"deployment {deployment_id!r} has no files")
        return bytes(archive)

    # -- models and environments -----------------------------------------------

    def create_model(self, name: str) -> ModelRecord:
        """A new model with its production environment; 409 if the name is taken."""
        check_name("model", name)
        record = ModelRecord(new_id(), name, time.time())
        try:
            with self._write() as conn:
                conn.execute(sa.insert(models_table).values(**record.__dict__))
                self._insert_environment(conn, record.id, PRODUCTION, Autoscaling())
        except sa.exc.IntegrityError:
            raise ConflictError(f"model {name!r} already exists") from None
        return record

    def create_environment(self, model_id: str, name: str, autoscaling: Autoscaling) -> None:
        check_name("environment", name)
        if name == DEVELOPMENT:
            raise InvalidRequestError("'development' is the development deployment, not a name")
        try:
            with self._write() as conn:
                self._insert_environment(conn, model_id, name, autoscaling)
        except sa.exc.IntegrityError:
            raise ConflictError(f"environment {name!r} already exists") from None

    def _insert_environment(
        self, conn: Connection, model_id: str, name: str, autoscaling: Autoscaling
    ) -> None:
        conn.execute(
            sa.insert(environments_table).values(
                model_id=model_id,
                name=name,
                deployment_id=None,
                autoscaling=autoscaling.model_dump_json(),
                created_at=time.time(),
            )
        )

    def delete_environment(self, model_id: str, name: str) -> None:
        if name == PRODUCTION:
            raise InvalidRequestError("the production environment cannot be deleted")
        with self._write() as conn:
            deleted = conn.execute(
                sa.delete(environments_table).where(
                    environments_table.c.model_id == model_id, environments_table.c.name == name
                )
            ).rowcount
        if not deleted:
            raise NotFoundError(f"environment {name!r} not found")

    def set_autoscaling(self, model_id: str, name: str, autoscaling: Autoscaling) -> None:
        with self._write() as conn:
            conn.execute(
                sa.update(environments_table)
                .where(environments_table.c.model_id == model_id, environments_table.c.name == name)
                .values(autoscaling=autoscaling.model_dump_json())
            )

    # -- deployments -------------------------------------------------------------

    def add_deployment(
        self, model_id: str, digest: str, source: str, archive: bytes | None, development: bool
    ) -> DeploymentRecord:
        """A new deployment (the development one replaces the model's previous one)."""
        record = DeploymentRecord(
            new_id(), model_id, digest, source, development, True, "copying", None, time.time()
        )
        with self._write() as conn:
            if development:
                previous = conn.execute(
                    sa.select(deployments_table.c.id).where(
                        deployments_table.c.model_id == model_id,
                        deployments_table.c.development.is_(True),
                    )
                ).scalar()
                if previous is not None:
                    conn.execute(
                        sa.update(deployments_table)
                        .where(deployments_table.c.id == previous)
                        .values(source=source, digest=digest, active=True, error=None)
                    )
                    return DeploymentRecord(
                        previous, model_id, digest, source, True, True, "copying", None, time.time()
                    )
            conn.execute(sa.insert(deployments_table).values(**record.__dict__))
            if archive is not None:
                conn.execute(
                    sa.insert(files_table).values(deployment_id=record.id, archive=archive)
                )
        return record

    def set_status(self, deployment_id: str, status: str, error: str | None = None) -> None:
        with self._write() as conn:
            conn.execute(
                sa.update(deployments_table)
                .where(deployments_table.c.id == deployment_id)
                .values(status=status, error=error)
            )

    def set_active(self, deployment_id: str, active: bool) -> None:
        with self._write() as conn:
            conn.execute(
                sa.update(deployments_table)
                .where(deployments_table.c.id == deployment_id)
                .values(active=active)
            )

    # -- promotion ---------------------------------------------------------------

    def lock_promotion(self, model_id: str, name: str, owner: str, seconds: float) -> None:
        """Take the environment's promotion lock, or 409 if another promotion holds it."""
        now = time.time()
        env = environments_table.c
        with self._write() as conn:
            taken = conn.execute(
                sa.update(environments_table)
                .where(
                    env.model_id == model_id,
                    env.name == name,
                    sa.or_(env.promotion_until.is_(None), env.promotion_until < now),
                )
                .values(promotion_owner=owner, promotion_until=now + seconds)
            ).rowcount
        if not taken:
            raise ConflictError(f"a promotion to environment {name!r} is already under way")

    def finish_promotion(
        self, model_id: str, name: str, owner: str, deployment_id: str | None
    ) -> None:
        """Release the lock; with ``deployment_id``, the environment now serves it."""
        env = environments_table.c
        values: dict[str, Any] = {"promotion_owner": None, "promotion_until": None}
        if deployment_id is not None:
            values["deployment_id"] = deployment_id
        with self._write() as conn:
            conn.execute(
                sa.update(environments_table)
                .where(env.model_id == model_id, env.name == name, env.promotion_owner == owner)
                .values(**values)
            )

    def clear_promotions(self) -> None:
        """Forget every lock (a single platform process restarting holds none)."""
        with self._write() as conn:
            conn.execute(
                sa.update(environments_table).values(promotion_owner=None, promotion_until=None)
            )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
