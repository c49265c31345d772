"""The playground and docs pages in a real headless Chromium against a real server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kingpost.testing import ServerProcess


@pytest.fixture(scope="module")
def markers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def server(start_observed: Any, markers: Path) -> ServerProcess:
    env = {"TOKEN_DELAY": "0.04", "MARKER_DIR": str(markers)}
    return start_observed("observed_llm", "--dev", env=env)


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.outside = []  # requests that left 127.0.0.1: there must be none (no CDN)

    def route(route: Any) -> None:
        if route.request.url.startswith(server.base_url):
            route.continue_()
        else:
            page.outside.append(route.request.url)
            route.abort()

    page.route("**/*", route)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(server.url("/playground"))
    page.wait_for_selector("body[data-loaded=true]", timeout=10_000)
    yield page
    context.close()


def test_playground_loads_with_readiness_and_hooks(page: Any) -> None:
    page.wait_for_function(
        "document.querySelector('[data-testid=readiness]').textContent === 'yes'", timeout=10_000
    )
    hooks = page.inner_text("[data-testid=hooks]")
    for hook in ("predict", "chat_completions", "messages"):
        assert hook in hooks
    assert page.inner_text("#model-name") == "observed-llm"
    assert page.outside == [] and page.errors == []


def test_predict_form_shows_result_status_latency_and_request_id(page: Any) -> None:
    page.fill("[data-testid=predict-input]", '{"text": "hi", "times": 3}')
    page.click("[data-testid=predict-send]")
    page.wait_for_function(
        "document.querySelector('[data-testid=predict-status]').textContent === '200'",
        timeout=10_000,
    )
    assert '"text": "hi hi hi"' in page.inner_text("[data-testid=predict-output]")
    assert page.inner_text("[data-testid=predict-latency]").endswith(" ms")
    assert len(page.inner_text("[data-testid=predict-request-id]")) >= 16
    page.click("[data-testid=predict-copy-curl]")
    curl = page.inner_text("[data-testid=predict-curl]")
    assert curl.startswith("curl -sS -X POST '") and '"times":3' in curl


def test_predict_form_shows_a_validation_error(page: Any) -> None:
    page.fill("[data-testid=predict-input]", '{"text": 5}')
    page.click("[data-testid=predict-send]")
    page.wait_for_function(
        "document.querySelector('[data-testid=predict-status]').textContent === '400'",
        timeout=10_000,
    )


def test_chat_reply_streams_in_incrementally(page: Any) -> None:
    page.fill("[data-testid=chat-max-tokens]", "20")
    page.fill("[data-testid=chat-input]", "Tell me something")
    page.click("[data-testid=chat-send]")
    # Part of the reply is on screen while the stream is still running.
    page.wait_for_function(
        """() => {
            const reply = document.querySelector('[data-testid=chat-reply]');
            const state = document.querySelector('[data-testid=chat-state]').textContent;
            return reply && Number(reply.dataset.pieces || 0) >= 3 && state === 'streaming';
        }""",
        timeout=10_000,
    )
    partial = page.inner_text("[data-testid=chat-reply]")
    page.wait_for_function(
        "document.querySelector('[data-testid=chat-state]').textContent === 'done'",
        timeout=10_000,
    )
    whole = page.inner_text("[data-testid=chat-reply]")
    assert whole.startswith(partial.strip()) and len(whole.split()) == 20 > len(partial.split())


def test_stop_disconnects_and_the_model_sees_it(page: Any, markers: Path) -> None:
    (markers / "stopped").unlink(missing_ok=True)
    page.select_option("[data-testid=chat-api]", "/v1/messages")
    page.fill("[data-testid=chat-max-tokens]", "100")
    page.fill("[data-testid=chat-input]", "Talk for a long time")
    page.click("[data-testid=chat-send]")
    page.wait_for_function(
        "Number(document.querySelector('[data-testid=chat-reply]')?.dataset.pieces || 0) >= 3",
        timeout=10_000,
    )
    page.click("[data-testid=chat-stop]")
    page.wait_for_function(
        "document.querySelector('[data-testid=chat-state]').textContent === 'stopped'",
        timeout=5_000,
    )
    stopped = _wait_for_file(markers / "stopped", timeout=5.0)
    assert 3 <= int(stopped) < 100


def test_charts_draw_request_rate_latency_and_tokens(page: Any, server: ServerProcess) -> None:
    with httpx.Client() as client:
        for _ in range(5):
            client.post(server.url("/predict"), json={"text": "x"})
            client.post(
                server.url("/v1/chat/completions"),
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            )
    page.wait_for_function(
        "Number(document.querySelector('[data-testid=chart-rate]').dataset.points) >= 3",
        timeout=10_000,
    )
    for chart in ("chart-rate", "chart-latency", "chart-tokens"):
        painted = page.evaluate(
            """(id) => {
                const canvas = document.querySelector(`[data-testid=${id}]`);
                const context = canvas.getContext('2d');
                const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
                let painted = 0;
                for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
                return painted;
            }""",
            chart,
        )
        assert painted > 100, chart


def test_screenshot_for_the_readme(
    page: Any, server: ServerProcess, readme_screenshot: Callable[[str], Path]
) -> None:
    page.fill("[data-testid=predict-input]", '{"text": "hello", "times": 2}')
    page.click("[data-testid=predict-send]")
    page.fill("[data-testid=chat-max-tokens]", "24")
    page.fill("[data-testid=chat-input]", "What do you do?")
    page.click("[data-testid=chat-send]")
    # A few seconds of traffic, so the charts have a shape.
    deadline = time.monotonic() + 10
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            client.post(server.url("/predict"), json={"text": "x"})
            if _points(page, "chart-tokens") >= 5:
                break
            time.sleep(0.1)
    page.wait_for_function(
        "document.querySelector('[data-testid=chat-state]').textContent === 'done'",
        timeout=10_000,
    )
    screenshot = readme_screenshot("playground.png")
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000


def test_docs_page_renders_the_routes_without_leaving_the_server(
    browser: Any, server: ServerProcess
) -> None:
    context = browser.new_context()
    page = context.new_page()
    outside: list[str] = []

    def route(route: Any) -> None:
        if route.request.url.startswith(server.base_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", route)
    page.goto(server.url("/docs"))
    page.wait_for_selector("body[data-loaded=true]", timeout=10_000)
    paths = page.eval_on_selector_all("details.op", "nodes => nodes.map(n => n.dataset.path)")
    assert {"/predict", "/v1/chat/completions", "/v1/messages", "/metrics"} <= set(paths)
    page.click("details.op[data-path='/predict'] summary")
    assert "times" in page.inner_text("details.op[data-path='/predict']")
    assert outside == []
    context.close()


def test_playground_is_off_without_dev(start_observed: Any) -> None:
    plain = start_observed("observed_llm")
    assert httpx.get(plain.url("/playground")).status_code == 404
    assert httpx.get(plain.url("/docs")).status_code == 200


def _points(page: Any, chart: str) -> int:
    return int(page.get_attribute(f"[data-testid={chart}]", "data-points") or 0)


def _wait_for_file(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout} s")
