"""The admin API under ``/admin/v1``: what the ``kingpost`` commands use, and nothing else.

    GET    /admin/v1/status
    GET    /admin/v1/models                                  POST {"name"}
    GET    /admin/v1/models/{model}
    GET    /admin/v1/models/{model}/environments             POST {"name", "autoscaling"?}
    GET    /admin/v1/models/{model}/environments/{env}       DELETE
    GET    /admin/v1/models/{model}/environments/{env}/autoscaling   PATCH {settings...}
    POST   /admin/v1/models/{model}/environments/{env}/wake
    POST   /admin/v1/models/{model}/environments/{env}/promotion/{pause|resume|cancel|force}
    GET    /admin/v1/deployments?model=
    POST   /admin/v1/deployments?model=&environment=&promote=&rolling=&dev=&source=
           (body: the model directory as .tar.gz; none with dev=true, which names source)
    GET    /admin/v1/deployments/{id}
    POST   /admin/v1/deployments/{id}/promote {"environment", "rolling", ...}
    POST   /admin/v1/deployments/{id}/activate, /deactivate
    GET    /admin/v1/deployments/{id}/logs?follow=&tail=
    GET    /admin/v1/keys                                    POST {"name", "scopes", ...}
    DELETE /admin/v1/keys/{id}                               (revokes it; the record stays)

and, beside it, the platform's ``/metrics`` and (unless ``--no-playground``)
``/playground``, ``/docs`` and ``/openapi.json`` (``platform.pages``).

``{model}`` is a model's id or name. Errors are ``{"error": "..."}`` with the
status of its class in ``kingpost.errors``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from kingpost.auth.keys import KeySpec, UnknownKeyError
from kingpost.errors import InvalidRequestError, NotFoundError, RequestError
from kingpost.platform.controller import Platform
from kingpost.platform.keystore import PlatformKeyStore
from kingpost.platform.pages import add_pages
from kingpost.platform.router import ENVIRONMENT, Invocation
from kingpost.platform.settings import Autoscaling
from kingpost.server.errors import ErrorTable

PREFIX = "/admin/v1"
EDGE_ERRORS = ErrorTable()


class NewModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class NewEnvironment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    autoscaling: Autoscaling = Field(default_factory=lambda: Autoscaling())


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=200)
    scopes: list[Literal["invoke", "async", "admin"]] = Field(default=["invoke"], min_length=1)
    models: list[str] = Field(default_factory=list)
    environments: list[str] = Field(default_factory=list)
    expires_at: float | None = None
    rate: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    environment: str = "production"
    rolling: bool = False
    scale_down_previous: bool = True
    step_percent: float = Field(default=25.0, ge=1, le=100)
    step_interval: float = Field(default=10.0, ge=0, le=3600)


def build_admin(
    platform: Platform, playground: bool = True, keys: PlatformKeyStore | None = None
) -> FastAPI:
    app = FastAPI(
        title="Kingpost platform admin API",
        docs_url=f"{PREFIX}/docs",
        openapi_url=f"{PREFIX}/openapi.json",
        redoc_url=None,
    )

    @app.exception_handler(RequestError)
    async def platform_error(_: Request, exc: RequestError) -> Response:
        reply = EDGE_ERRORS.reply(exc)
        headers = {name.decode(): value.decode() for name, value in reply.headers}
        return Response(reply.body, reply.status, headers, media_type="application/json")

    @app.exception_handler(SQLAlchemyError)
    async def store_error(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        message = str(exc.__cause__ or exc).splitlines()[0]
        return JSONResponse({"error": f"the state store is unavailable: {message}"}, 503)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'][1:]) or 'body'}: {error['msg']}"
            for error in exc.errors()
        )
        return JSONResponse({"error": problems}, 400)

    @app.get(f"{PREFIX}/status")
    async def status() -> dict[str, Any]:
        return {
            "owner": platform.owner,
            "state": "postgresql" if platform.options.shared else "sqlite",
            "home": str(platform.options.home),
            "started_at": platform.started_at,
            "models": len(platform.snapshot.models),
            "replicas": platform.replica_states(),
        }

    # -- models and environments ----------------------------------------------------

    @app.get(f"{PREFIX}/models")
    async def list_models() -> list[dict[str, object]]:
        models = sorted(platform.snapshot.models.values(), key=lambda m: m.name)
        return [platform.describe_model(model) for model in models]

    @app.post(f"{PREFIX}/models", status_code=201)
    async def create_model(body: NewModel) -> dict[str, object]:
        return platform.describe_model(platform.create_model(body.name))

    @app.get(f"{PREFIX}/models/{{model}}")
    async def get_model(model: str) -> dict[str, object]:
        return platform.describe_model(platform.model(model))

    @app.get(f"{PREFIX}/models/{{model}}/environments")
    async def list_environments(model: str) -> list[dict[str, object]]:
        record = platform.model(model)
        return [
            platform.describe_environment(env)
            for env in platform.snapshot.environments_of(record.id)
        ]

    @app.post(f"{PREFIX}/models/{{model}}/environments", status_code=201)
    async def create_environment(model: str, body: NewEnvironment) -> dict[str, object]:
        platform.create_environment(model, body.name, body.autoscaling)
        record = platform.model(model)
        return platform.describe_environment(platform.snapshot.environment(record.id, body.name))

    @app.get(f"{PREFIX}/models/{{model}}/environments/{{env}}")
    async def get_environment(model: str, env: str) -> dict[str, object]:
        record = platform.model(model)
        return platform.describe_environment(platform.snapshot.environment(record.id, env))

    @app.delete(f"{PREFIX}/models/{{model}}/environments/{{env}}")
    async def delete_environment(model: str, env: str) -> dict[str, object]:
        platform.delete_environment(model, env)
        return {"deleted": env}

    @app.get(f"{PREFIX}/models/{{model}}/environments/{{env}}/autoscaling")
    async def get_autoscaling(model: str, env: str) -> dict[str, object]:
        record = platform.model(model)
        return platform.snapshot.environment(record.id, env).autoscaling.model_dump()

    @app.patch(f"{PREFIX}/models/{{model}}/environments/{{env}}/autoscaling")
    async def set_autoscaling(model: str, env: str, request: Request) -> dict[str, object]:
        changes = await _json_object(request)
        return platform.set_autoscaling(model, env, changes).model_dump()

    @app.post(f"{PREFIX}/models/{{model}}/environments/{{env}}/wake", status_code=202)
    async def wake(model: str, env: str) -> dict[str, object]:
        pool = await platform.wake(Invocation(model, ENVIRONMENT, env, "wake", ""))
        return {"status": "waking", "deployment_id": pool.key[0]}

    @app.post(f"{PREFIX}/models/{{model}}/environments/{{env}}/promotion/{{action}}")
    async def control_promotion(model: str, env: str, action: str) -> dict[str, object]:
        record = platform.model(model)
        run = platform.promotions.get((record.id, env))
        if run is None:
            raise NotFoundError(f"no promotion to environment {env!r} is under way")
        controls = {"pause": run.pause, "resume": run.resume, "cancel": run.cancel}
        controls["force"] = run.force
        if action not in controls:
            raise NotFoundError(f"unknown promotion action {action!r}")
        controls[action]()
        return run.describe()

    # -- deployments -------------------------------------------------------------------

    @app.get(f"{PREFIX}/deployments")
    async def list_deployments(model: str | None = None) -> list[dict[str, object]]:
        deployments = sorted(platform.snapshot.deployments.values(), key=lambda d: d.created_at)
        if model is not None:
            model_id = platform.model(model).id
            deployments = [d for d in deployments if d.model_id == model_id]
        return [platform.describe_deployment(d) for d in deployments]

    @app.post(f"{PREFIX}/deployments", status_code=201)
    async def create_deployment(
        request: Request,
        model: str,
        environment: str | None = None,
        promote: bool = False,
        rolling: bool = False,
        dev: bool = False,
        source: str = "",
    ) -> dict[str, object]:
        if dev and (environment or promote):
            raise InvalidRequestError("the development deployment is promoted later, not at once")
        archive = None if dev else await request.body()
        if not dev and len(archive or b"") > platform.options.max_request_bytes:
            raise InvalidRequestError("the model archive is larger than the request limit")
        record = await asyncio.to_thread(platform.deploy, model, archive, source, dev)
        target = "production" if promote and environment is None else environment
        if target is not None:
            platform.promote(record.id, target, rolling=rolling)
        else:
            platform.start_deployment(record)
        return platform.describe_deployment(platform.snapshot.deployment(record.id))

    @app.get(f"{PREFIX}/deployments/{{deployment_id}}")
    async def get_deployment(deployment_id: str) -> dict[str, object]:
        return platform.describe_deployment(platform.snapshot.deployment(deployment_id))

    @app.post(f"{PREFIX}/deployments/{{deployment_id}}/promote", status_code=202)
    async def promote(deployment_id: str, body: PromoteRequest) -> dict[str, object]:
        run = platform.promote(
            deployment_id,
            body.environment,
            rolling=body.rolling,
            scale_down_previous=body.scale_down_previous,
            step_percent=body.step_percent,
            step_interval=body.step_interval,
        )
        return run.describe()

    @app.post(f"{PREFIX}/deployments/{{deployment_id}}/activate")
    async def activate(deployment_id: str) -> dict[str, object]:
        return platform.describe_deployment(platform.set_active(deployment_id, True))

    @app.post(f"{PREFIX}/deployments/{{deployment_id}}/deactivate")
    async def deactivate(deployment_id: str) -> dict[str, object]:
        return platform.describe_deployment(platform.set_active(deployment_id, False))

    @app.get(f"{PREFIX}/deployments/{{deployment_id}}/logs")
    async def logs(deployment_id: str, follow: bool = False, tail: int = 200) -> StreamingResponse:
        platform.snapshot.deployment(deployment_id)
        path = platform.logs_dir / f"{deployment_id}.log"
        return StreamingResponse(_read_log(str(path), follow, tail), media_type="text/plain")

    if keys is not None:
        add_key_routes(app, keys)
    add_pages(app, platform.metrics, PREFIX, playground)
    return app


def add_key_routes(app: FastAPI, keys: PlatformKeyStore) -> None:
    """``kingpost keys --platform URL``: the keys in the platform's state store."""

    @app.get(f"{PREFIX}/keys")
    async def list_keys() -> list[dict[str, object]]:
        return [record.public() for record in await asyncio.to_thread(keys.list)]

    @app.post(f"{PREFIX}/keys", status_code=201)
    async def create_key(body: NewKey) -> dict[str, object]:
        spec = KeySpec(
            name=body.name,
            scopes=frozenset(body.scopes),
            models=frozenset(body.models),
            environments=frozenset(body.environments),
            expires_at=body.expires_at,
            rate=body.rate,
            concurrency=body.concurrency,
        )
        key, record = await asyncio.to_thread(keys.create, spec)
        return {"key": key, **record.public()}  # the only time the key is shown

    @app.delete(f"{PREFIX}/keys/{{key_id}}")
    async def revoke_key(key_id: str) -> dict[str, object]:
        try:
            record = await asyncio.to_thread(keys.revoke, key_id)
        except UnknownKeyError as exc:
            raise NotFoundError(str(exc)) from None
        return record.public()


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidRequestError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    return body


async def _read_log(path: str, follow: bool, tail: int) -> AsyncIterator[bytes]:
    """The last ``tail`` lines, then (following) whatever is appended, until the client goes."""
    try:
        log = open(path, "rb")  # noqa: SIM115 - closed below, across yields
    except FileNotFoundError:
        if not follow:
            return
        while not os.path.exists(path):
            await asyncio.sleep(0.2)
        log = open(path, "rb")  # noqa: SIM115
    with log:
        log.seek(0, os.SEEK_END)
        size = log.tell()
        log.seek(max(0, size - 65536))
        lines = log.read().splitlines(keepends=True)[-tail:] if tail > 0 else []
        if lines:
            yield b"".join(lines)
        while follow:
            chunk = log.read()
            if chunk:
                yield chunk
            else:
                await asyncio.sleep(0.2)
