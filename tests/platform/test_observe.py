"""Seeing inside the platform: its /metrics, the routing hop's span, its playground pane.

One ``kingpost up`` with tracing on (to an OTLP receiver this module runs),
one model with two deployments: v1 serving production, v2 started by its id.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.observe.conftest import chromium_path
from tests.platform.conftest import MODELS, PlatformProcess, model_copy, wait_for

pytest.importorskip("opentelemetry.sdk", reason="the otel extra: pip install 'kingpost[otel]'")
pytest.importorskip("opentelemetry.proto", reason="the test extra has opentelemetry-proto")
from tests.observe.otlp_receiver import OTLPReceiver

MODEL = "shop"
TRACE_ID = "5bf92f3577b34da6a3ce929d0e0e4737"
PARENT_ID = "10f067aa0ba902b8"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def platform(module_dir: Path, receiver: OTLPReceiver) -> Iterator[PlatformProcess]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    process = PlatformProcess(module_dir / "home", env=env)
    process.start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def deployments(platform: PlatformProcess, module_dir: Path) -> dict[str, str]:
    """{"v1": id serving production, "v2": id running by itself}."""
    admin = platform.admin
    admin.create_model(MODEL)
    ids = {}
    for version, environment in (("v1", "production"), ("v2", None)):
        files = {"model__version.txt": version}
        directory = model_copy(module_dir, version, MODELS / "versioned", **files)
        record = admin.deploy(directory, MODEL, environment=environment)
        admin.wait_deployed(record["id"], environment, timeout=60)
        ids[version] = str(record["id"])
    wait_for(lambda: admin.deployment(ids["v2"])["ready"] == 1, 30, "v2's replica")
    return ids


def predict(platform: PlatformProcess, **kw: Any) -> httpx.Response:
    body = kw.pop("json", {"x": 1})
    return httpx.post(
        platform.url(f"/models/{MODEL}/production/predict"), json=body, timeout=30, **kw
    )


def scrape(platform: PlatformProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = httpx.get(platform.url("/metrics"))
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def labels(deployment: str, environment: str = "production", **extra: str) -> tuple:  # type: ignore[type-arg]
    values = {"model_name": MODEL, "environment": environment, "deployment": deployment, **extra}
    return tuple(sorted(values.items()))


# -- metrics ---------------------------------------------------------------------------


def test_metrics_label_requests_replicas_and_cold_starts_by_model_environment_deployment(
    platform: PlatformProcess, deployments: dict[str, str]
) -> None:
    v1, v2 = deployments["v1"], deployments["v2"]
    before = scrape(platform).get(
        ("kingpost_requests_total", labels(v1, route="predict", status="200")), 0
    )
    for _ in range(3):
        assert predict(platform).json()["version"] == "v1"
    slow = threading.Thread(target=predict, kwargs={"platform": platform, "json": {"sleep": 1.5}})
    slow.start()
    try:
        in_flight = ("kingpost_requests_in_flight", labels(v1))
        wait_for(lambda: scrape(platform)[in_flight] == 1, 10, "one request in flight")
    finally:
        slow.join(10)
    metrics = scrape(platform)
    ok = labels(v1, route="predict", status="200")
    assert metrics[("kingpost_requests_total", ok)] == before + 4
    assert metrics[("kingpost_request_duration_seconds_count", ok)] == before + 4
    assert metrics[("kingpost_request_duration_seconds_sum", ok)] >= 1.5
    assert metrics[("kingpost_requests_in_flight", labels(v1))] == 0
    assert metrics[("kingpost_requests_parked", labels(v1))] == 0
    assert metrics[("kingpost_replicas", labels(v1, state="ready"))] == 1
    assert metrics[("kingpost_replicas", labels(v1, state="starting"))] == 0
    # v2 runs by its id, for no environment.
    assert metrics[("kingpost_replicas", labels(v2, environment="", state="ready"))] == 1
    assert metrics[("kingpost_cold_starts_total", labels(v1))] >= 1
    assert metrics[("kingpost_cold_start_seconds_count", labels(v1))] >= 1
    # An error answered by a replica is counted under its status.
    reply = httpx.post(platform.url(f"/models/{MODEL}/production/predict"), content=b"{nope")
    assert reply.status_code == 400
    bad = ("kingpost_requests_total", labels(v1, route="predict", status="400"))
    assert scrape(platform)[bad] >= 1


# -- tracing ---------------------------------------------------------------------------


def test_the_routing_hop_is_a_span_and_the_replica_joins_its_trace(
    platform: PlatformProcess, deployments: dict[str, str], receiver: OTLPReceiver
) -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    reply = predict(platform, headers={"traceparent": traceparent})
    assert reply.status_code == 200

    def of_trace(name: str) -> list[dict[str, Any]]:
        return [s for s in receiver.wait_for(name) if s["trace_id"] == TRACE_ID]

    [hop] = wait_for(lambda: of_trace("POST platform predict"), 10, "the platform's span")
    assert hop["parent_span_id"] == PARENT_ID
    assert hop["kind"] == 2  # SERVER
    assert hop["resource"]["service.name"] == "kingpost-platform"
    attributes = hop["attributes"]
    assert attributes["kingpost.model"] == MODEL
    assert attributes["kingpost.environment"] == "production"
    assert attributes["kingpost.deployment"] == deployments["v1"]
    assert attributes["http.response.status_code"] == 200
    [request] = wait_for(lambda: of_trace("POST predict"), 10, "the replica's span")
    assert request["parent_span_id"] == hop["span_id"]
    assert request["resource"]["service.name"] == "versioned"
    [hook] = wait_for(lambda: of_trace("predict"), 10, "the replica's hook span")
    assert hook["parent_span_id"] == request["span_id"]


# -- the playground --------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("KINGPOST_REQUIRE_BROWSER"):
            pytest.fail("no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


def test_the_playground_pane_lists_deployments_and_its_promote_button_promotes(
    platform: PlatformProcess,
    deployments: dict[str, str],
    browser: Any,
    readme_screenshot: Callable[[str], Path],
) -> None:
    v1, v2 = deployments["v1"], deployments["v2"]
    context = browser.new_context(viewport={"width": 1280, "height": 820})
    page = context.new_page()
    outside: list[str] = []
    errors: list[str] = []

    def route(route: Any) -> None:
        if route.request.url.startswith(platform.base_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(platform.url("/playground"))
        page.wait_for_selector("body[data-loaded=true]", timeout=10_000)
        for deployment in (v1, v2):
            row = f"tr[data-deployment='{deployment}']"
            assert page.inner_text(f"{row} [data-testid=deployment-replicas]") == "1/1"
        assert (
            page.inner_text(f"tr[data-deployment='{v1}'] [data-testid=deployment-environments]")
            == "production"
        )
        env_row = f"tr[data-model='{MODEL}'][data-environment='production']"
        assert page.inner_text(f"{env_row} [data-testid=env-deployment]") == v1
        assert page.inner_text(f"{env_row} [data-testid=env-replicas]") == "1/1"
        # v1 serves production already: only v2 can be promoted there.
        assert page.is_disabled(f"tr[data-deployment='{v1}'] [data-testid=promote]")
        # Traffic for the charts, then the promotion from the page.
        for _ in range(5):
            predict(platform)
        row = f"tr[data-deployment='{v2}']"
        page.select_option(f"{row} [data-testid=promote-env]", "production")
        page.click(f"{row} [data-testid=promote]")
        page.wait_for_function(
            "document.querySelector('[data-testid=promote-result]').dataset.status === '202'",
            timeout=10_000,
        )
        wait_for(
            lambda: (
                platform.admin.environment(MODEL, "production")["deployment_id"] == v2
                and platform.admin.environment(MODEL, "production")["promotion"] is None
            ),
            30,
            "production to move to v2",
        )
        assert predict(platform).json()["version"] == "v2"
        page.wait_for_function(
            f"""document.querySelector("{env_row} [data-testid=env-deployment]")
                ?.textContent === '{v2}'""",
            timeout=10_000,
        )
        # A few seconds of traffic, so the charts have a shape in the screenshot.
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and _points(page, "chart-rate") < 5:
            predict(platform)
            time.sleep(0.05)
        assert _points(page, "chart-rate") >= 2
        badge = page.inner_text("#readiness")
        assert badge.endswith("replicas ready"), badge
        screenshot = readme_screenshot("playground-platform.png")
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000
        assert outside == [] and errors == []
    finally:
        context.close()


def _points(page: Any, chart: str) -> int:
    return int(page.get_attribute(f"[data-testid={chart}]", "data-points") or 0)


def test_the_playground_is_served_by_the_admin_app_and_can_be_turned_off(
    module_dir: Path,
) -> None:
    from starlette.testclient import TestClient

    from kingpost.platform.settings import PlatformOptions
    from kingpost.platform.up import build_platform

    for playground, status in ((True, 200), (False, 404)):
        options = PlatformOptions(home=module_dir / f"pages-{playground}", playground=playground)
        app = build_platform(options)
        client = TestClient(app)  # type: ignore[arg-type]  # no lifespan: no replicas
        try:
            for path in ("/playground", "/playground/platform.js", "/docs"):
                assert client.get(path).status_code == status, path
            if playground:
                [pane] = client.get("/playground/config.json").json()["extensions"]
                assert pane == {
                    "title": "Platform",
                    "module": "/playground/platform.js",
                    "api": "/admin/v1",
                    "first": True,
                }
            assert client.get("/metrics").status_code == 200
        finally:
            client.close()
            app.platform.store.close()
