"""The page routes as plain ASGI apps, in process."""

from __future__ import annotations

import httpx
import pytest

from kingpost.observe.pages import PlaygroundConfig, observe_routes


def client(playground: PlaygroundConfig | None) -> httpx.AsyncClient:
    table = {
        route.path: route.app
        for route in observe_routes({"openapi": "3.1.0"}, playground=playground)
    }

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        route = table.get(scope["path"])
        if route is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await route(scope, receive, send)

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_assets_are_served_with_types_and_revalidated_by_etag() -> None:
    async with client(PlaygroundConfig()) as http:
        script = await http.get("/playground/assets/panes/chat.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        again = await http.get(
            "/playground/assets/panes/chat.js", headers={"if-none-match": script.headers["etag"]}
        )
        assert again.status_code == 304 and again.content == b""
        head = await http.head("/playground")
        assert head.status_code == 200 and head.content == b""
        assert (await http.post("/openapi.json")).status_code == 405


async def test_the_playground_config_names_extension_panes() -> None:
    config = PlaygroundConfig()
    config.add_extension("Platform", "/admin/playground/platform.js", "/admin")
    async with client(config) as http:
        body = (await http.get("/playground/config.json")).json()
    assert body["extensions"] == [
        {"title": "Platform", "module": "/admin/playground/platform.js", "api": "/admin"}
    ]
    assert body["panes"] == ["status", "predict", "chat", "metrics"]


@pytest.mark.parametrize("path", ["/playground", "/playground/assets/playground.js"])
async def test_without_a_playground_config_there_is_no_playground(path: str) -> None:
    async with client(None) as http:
        assert (await http.get(path)).status_code == 404
        assert (await http.get("/docs")).status_code == 200
