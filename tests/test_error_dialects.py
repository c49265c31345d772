"""Errors are rendered in the dialect of the route they happen on.

The core runs in process for what needs no socket; the SDK tests use real servers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from starlette.exceptions import HTTPException

from kingpost.errors import (
    InvalidParameterError,
    NotReadyError,
    PayloadTooLargeError,
    RequestError,
)
from kingpost.server.app import ServerApp
from kingpost.server.errors import ErrorDialect, ErrorTable
from kingpost.server.exchange import Exchange
from kingpost.server.routing import Route, Router
from kingpost.testing import InProcessServer
from tests.conftest import EXAMPLES, MODELS

# -- the table ---------------------------------------------------------------------


def body_of(exc: BaseException, dialect: ErrorDialect) -> tuple[int, dict[str, object]]:
    reply = ErrorTable().reply(exc, dialect)
    return reply.status, json.loads(reply.body)


def test_the_kingpost_dialect_is_a_plain_error_string() -> None:
    assert body_of(NotReadyError("model is not ready"), ErrorDialect.KINGPOST) == (
        503,
        {"error": "model is not ready"},
    )


def test_the_openai_dialect_names_the_parameter() -> None:
    status, body = body_of(InvalidParameterError("n", "must be 1"), ErrorDialect.OPENAI)
    assert status == 400
    assert body == {
        "error": {
            "message": "n: must be 1",
            "type": "invalid_request_error",
            "param": "n",
            "code": None,
        }
    }


def test_the_anthropic_dialect_uses_anthropics_error_types() -> None:
    assert body_of(PayloadTooLargeError("too big"), ErrorDialect.ANTHROPIC) == (
        413,
        {"type": "error", "error": {"type": "request_too_large", "message": "too big"}},
    )
    _, body = body_of(NotReadyError("loading"), ErrorDialect.ANTHROPIC)
    assert body["error"] == {"type": "overloaded_error", "message": "loading"}


def test_retryable_statuses_say_so_to_the_sdks() -> None:
    reply = ErrorTable().reply(NotReadyError("loading"), ErrorDialect.OPENAI)
    assert (b"x-should-retry", b"true") in reply.headers
    client_error = ErrorTable().reply(InvalidParameterError(None, "bad"), ErrorDialect.OPENAI)
    assert (b"x-should-retry", b"true") not in client_error.headers


def test_a_subclass_is_found_through_its_bases() -> None:
    class TeapotError(RequestError):
        status_code = 418

    assert body_of(TeapotError("short and stout"), ErrorDialect.KINGPOST) == (
        418,
        {"error": "short and stout"},
    )


def test_a_model_exception_is_a_generic_500_unless_in_dev_mode() -> None:
    assert body_of(ValueError("secret detail"), ErrorDialect.OPENAI)[1]["error"] == {
        "message": "Internal Server Error",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    reply = ErrorTable(dev=True).reply(ValueError("secret detail"), ErrorDialect.KINGPOST)
    assert json.loads(reply.body)["type"] == "ValueError"


def test_an_http_exception_keeps_its_status_and_detail() -> None:
    exc = HTTPException(status_code=409, detail="taken", headers={"Retry-After": "3"})
    reply = ErrorTable().reply(exc, ErrorDialect.ANTHROPIC)
    assert reply.status == 409
    assert json.loads(reply.body)["error"]["message"] == "taken"
    assert (b"retry-after", b"3") in reply.headers


# -- the core, in process ------------------------------------------------------------


async def refuse(ex: Exchange) -> None:
    raise NotReadyError("come back later")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    router = Router(
        [
            Route("/plain", refuse, ("POST",)),
            Route("/v1/chat/completions", refuse, ("POST",), dialect=ErrorDialect.OPENAI),
            Route("/v1/messages", refuse, ("POST",), dialect=ErrorDialect.ANTHROPIC),
        ]
    )
    app = ServerApp(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kingpost") as client:
        yield client


async def test_each_route_answers_in_its_own_dialect(client: httpx.AsyncClient) -> None:
    plain = await client.post("/plain")
    chat = await client.post("/v1/chat/completions")
    messages = await client.post("/environments/production/sync/v1/messages")
    assert plain.json() == {"error": "come back later"}
    assert chat.json()["error"]["message"] == "come back later"
    assert messages.json()["error"] == {"type": "overloaded_error", "message": "come back later"}
    assert {plain.status_code, chat.status_code, messages.status_code} == {503}


async def test_a_wrong_method_is_405_in_the_routes_dialect(client: httpx.AsyncClient) -> None:
    reply = await client.get("/v1/chat/completions")
    assert reply.status_code == 405
    assert reply.headers["allow"] == "POST"
    assert reply.json()["error"]["type"] == "invalid_request_error"


async def test_an_unknown_path_is_404_with_a_request_id(client: httpx.AsyncClient) -> None:
    reply = await client.get("/nowhere")
    assert reply.status_code == 404
    assert reply.json() == {"error": "no route for /nowhere"}
    assert len(reply.headers["x-request-id"]) == 32


# -- through the official SDKs ----------------------------------------------------------


@pytest.fixture(scope="module")
def echo() -> Iterator[InProcessServer]:
    with InProcessServer(EXAMPLES / "echo") as server:
        yield server


def test_the_openai_sdk_shows_a_missing_hook_as_not_found(echo: InProcessServer) -> None:
    client = openai.OpenAI(
        base_url=echo.url("/v1"), api_key="unused", max_retries=0, http_client=echo.sdk_client
    )
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.message.endswith("this model does not implement chat_completions")
    assert caught.value.body == {
        "message": "this model does not implement chat_completions",
        "type": "not_found_error",
        "param": None,
        "code": None,
    }


def test_the_anthropic_sdk_shows_a_missing_hook_as_not_found(echo: InProcessServer) -> None:
    client = anthropic.Anthropic(
        base_url=echo.url(""), api_key="unused", max_retries=0, http_client=echo.sdk_client
    )
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert "this model does not implement messages" in str(caught.value)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "this model does not implement messages"},
    }


def test_a_loading_model_is_a_retryable_503_in_each_sdk(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = InProcessServer(
        MODELS / "gated_load", env={"KINGPOST_TEST_GATE": str(gate)}, wait_ready=False
    )
    with server:
        openai_client = openai.OpenAI(
            base_url=server.url("/v1"), api_key="x", max_retries=0, http_client=server.sdk_client
        )
        with pytest.raises(openai.InternalServerError) as from_openai:
            openai_client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        assert from_openai.value.status_code == 503
        assert from_openai.value.message.endswith("model is not ready")
        assert from_openai.value.response.headers["x-should-retry"] == "true"
        anthropic_client = anthropic.Anthropic(
            base_url=server.url(""), api_key="x", max_retries=0, http_client=server.sdk_client
        )
        with pytest.raises(anthropic.InternalServerError) as from_anthropic:
            anthropic_client.messages.create(
                model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
        assert from_anthropic.value.body == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "model is not ready"},
        }
        gate.touch()
        server.wait_until("/v1/models/model", 60)
        reply = openai_client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices == []


def test_invalid_json_on_an_openai_route_is_an_openai_error(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    with InProcessServer(MODELS / "gated_load", env={"KINGPOST_TEST_GATE": str(gate)}) as server:
        reply = server.client.post("/v1/chat/completions", content=b"{not json")
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("request body is not valid JSON")
