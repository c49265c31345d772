"""End to end: ``kingpost up`` with real replicas, real clients, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.platform.conftest import ROOT, PlatformProcess, model_copy, wait_for

PARROT = ROOT / "examples" / "openai-compatible"


def predict(
    platform: PlatformProcess, path: str, body: dict[str, Any], **kw: Any
) -> httpx.Response:
    return httpx.post(platform.url(path), json=body, timeout=30, **kw)


def env_replicas(platform: PlatformProcess, model: str, env: str) -> dict[str, Any]:
    replicas = platform.admin.environment(model, env)["replicas"]
    return replicas or {"replicas": 0, "ready": 0}


def deploy(
    platform: PlatformProcess, directory: Path, model: str, environment: str | None = None
) -> str:
    record = platform.admin.deploy(directory, model, environment=environment)
    platform.admin.wait_deployed(record["id"], environment, timeout=60)
    return str(record["id"])


# -- routing, both URL forms, the SDKs ------------------------------------------------


def test_two_models_with_production_and_staging_through_both_url_forms(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    for model in ("alpha", "beta"):
        platform.admin.create_model(model)
        platform.admin.create_environment(model, "staging")
        for env in ("production", "staging"):
            directory = model_copy(
                tmp_path,
                f"{model}-{env}",
                PARROT,
                **{"config.yaml": f"model_name: {model}-{env}\n"},
            )
            deploy(platform, directory, model, env)

    for model in ("alpha", "beta"):
        for env in ("production", "staging"):
            target = "production" if env == "production" else f"environments/{env}"
            path_form = openai.OpenAI(
                base_url=platform.url(f"/models/{model}/{target}/sync/v1"), api_key="x"
            )
            host_form = openai.OpenAI(
                base_url=platform.url(f"/{target}/sync/v1"),
                api_key="x",
                default_headers={"Host": f"model-{model}.platform.test"},
            )
            for client in (path_form, host_form):
                stream = client.chat.completions.create(
                    model="any", messages=[{"role": "user", "content": "hi there"}], stream=True
                )
                chunks = list(stream)
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                assert text.strip() == "You said: hi there"
                assert chunks[0].model == f"{model}-{env}"
            claude = anthropic.Anthropic(
                base_url=platform.url(f"/models/{model}/{target}/sync"), api_key="x"
            )
            with claude.messages.stream(
                model="any", max_tokens=32, messages=[{"role": "user", "content": "hello"}]
            ) as stream:
                text = "".join(stream.text_stream)
                final = stream.get_final_message()
            assert "hello" in text
            assert final.model == f"{model}-{env}"


def test_model_id_works_like_its_name_and_the_regional_host_form(platform: PlatformProcess) -> None:
    model = platform.admin.model("alpha")
    by_id = predict(platform, f"/models/{model['id']}/production/predict", {"q": 1})
    assert by_id.status_code == 200
    regional = predict(platform, "/predict", {"q": 1}, headers={"Host": "model-alpha-staging.x"})
    assert regional.status_code == 200
    assert regional.json() == {"echo": {"q": 1}}


def test_unknown_model_environment_and_deployment_are_404_naming_them(
    platform: PlatformProcess,
) -> None:
    cases = {
        "/models/nosuch/production/predict": "model 'nosuch' not found",
        "/models/alpha/environments/nosuch/predict": "environment 'nosuch'",
        "/models/alpha/deployment/nosuch/predict": "deployment 'nosuch'",
        "/models/alpha/development/predict": "no development deployment",
    }
    for path, message in cases.items():
        response = predict(platform, path, {})
        assert response.status_code == 404, path
        assert message in response.json()["error"]
    assert httpx.get(platform.url("/nothing/here")).status_code == 404


def test_deactivated_deployment_and_deleted_environment_answer_404(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    platform.admin.create_model("gamma")
    platform.admin.create_environment("gamma", "staging")
    deployment = deploy(platform, model_copy(tmp_path, "g"), "gamma", "staging")
    assert (
        predict(platform, f"/models/gamma/deployment/{deployment}/predict", {}).status_code == 200
    )
    assert platform.cli("deactivate", deployment).returncode == 0
    assert (
        predict(platform, f"/models/gamma/deployment/{deployment}/predict", {}).status_code == 404
    )
    assert predict(platform, "/models/gamma/environments/staging/predict", {}).status_code == 404
    assert platform.cli("activate", deployment).returncode == 0
    wait_for(
        lambda: (
            predict(platform, "/models/gamma/environments/staging/predict", {}).status_code == 200
        ),
        30,
        "the reactivated deployment",
    )
    result = platform.cli("environments", "gamma", "--delete", "staging")
    assert result.returncode == 0, result.stderr
    response = predict(platform, "/models/gamma/environments/staging/predict", {})
    assert response.status_code == 404
    assert "staging" in response.json()["error"]
    production = platform.cli("environments", "gamma", "--delete", "production")
    assert production.returncode == 1
    assert "cannot be deleted" in production.stderr


# -- promotion under load ------------------------------------------------------------


async def _load(
    url: str, stop: asyncio.Event, clients: int = 16, body: dict[str, Any] | None = None
) -> list[list[tuple[float, int, str]]]:
    """``clients`` loops POSTing until ``stop`` (bounded); per client: (time, status, version)."""

    async def client(results: list[tuple[float, int, str]]) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(20000):
                if stop.is_set():
                    return
                try:
                    response = await http.post(url, json=body or {"x": 1})
                    version = (
                        response.json().get("version", "") if response.status_code == 200 else ""
                    )
                    results.append((time.monotonic(), response.status_code, version))
                except httpx.HTTPError as exc:
                    results.append((time.monotonic(), 0, repr(exc)))

    per_client: list[list[tuple[float, int, str]]] = [[] for _ in range(clients)]
    await asyncio.gather(*(client(results) for results in per_client))
    return per_client


async def _promote_under_load(
    platform: PlatformProcess, model: str, new: str, rolling: bool
) -> tuple[list[list[tuple[float, int, str]]], float, float]:
    stop = asyncio.Event()
    load = asyncio.create_task(_load(platform.url(f"/models/{model}/production/predict"), stop))
    await asyncio.sleep(1.0)
    started = time.monotonic()
    await asyncio.to_thread(
        platform.admin.promote, new, "production", rolling, True, 34.0 if rolling else None, 0.5
    )
    await asyncio.to_thread(platform.admin.wait_deployed, new, "production", 60)
    switched = time.monotonic()
    await asyncio.sleep(1.0)
    stop.set()
    return await asyncio.wait_for(load, 30), started, switched


def test_load_across_a_promotion_fails_nothing_and_switches_old_then_new(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    old = deploy(platform, model_copy(tmp_path, "p1"), "promo", "production")
    new = platform.admin.deploy(model_copy(tmp_path, "p2", **{"model__version.txt": "v2"}), "promo")
    platform.admin.wait_deployed(new["id"], None, timeout=60)
    per_client, started, switched = asyncio.run(
        _promote_under_load(platform, "promo", new["id"], rolling=False)
    )
    answers = [a for results in per_client for a in results]
    assert len(answers) > 100
    assert all(status == 200 for _, status, _ in answers), {a for a in answers if a[1] != 200}
    for results in per_client:
        versions = [version for _, _, version in results]
        flip = versions.index("v2")
        assert set(versions[:flip]) == {"v1"} and set(versions[flip:]) == {"v2"}
    assert all(v == "v1" for t, _, v in answers if t < started)
    assert all(v == "v2" for t, _, v in answers if t > switched + 0.1)
    # The previous deployment drained and scaled down.
    wait_for(lambda: platform.admin.deployment(old)["replicas"] == 0, 30, "old scaled down")


def test_load_across_a_rolling_promotion_fails_nothing(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    platform.admin.autoscaling("promo", "production", {"min_replica": 2, "max_replica": 2})
    wait_for(lambda: env_replicas(platform, "promo", "production")["ready"] == 2, 30, "2 ready")
    new = platform.admin.deploy(model_copy(tmp_path, "p3", **{"model__version.txt": "v3"}), "promo")
    per_client, started, switched = asyncio.run(
        _promote_under_load(platform, "promo", new["id"], rolling=True)
    )
    answers = sorted(a for results in per_client for a in results)
    assert all(status == 200 for _, status, _ in answers), {a for a in answers if a[1] != 200}
    assert all(v == "v2" for t, _, v in answers if t < started)
    assert all(v == "v3" for t, _, v in answers if t > switched + 0.1)
    during = {v for t, _, v in answers if started < t < switched}
    assert during == {"v2", "v3"}  # both served while traffic shifted
    assert env_replicas(platform, "promo", "production")["replicas"] == 2


def test_a_second_promotion_to_the_same_environment_is_409(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    record = platform.admin.deploy(
        model_copy(tmp_path, "p4", **{"model__version.txt": "v4"}), "promo"
    )
    platform.admin.wait_deployed(record["id"], None, timeout=60)
    platform.admin.promote(
        record["id"], "production", rolling=True, step_percent=50, step_interval=30
    )
    second = platform.cli("promote", record["id"], "--environment", "production")
    assert second.returncode == 1
    assert "already under way" in second.stderr
    paused = platform.cli("promote", record["id"], "--environment", "production", "--pause")
    assert paused.returncode == 0 and "paused" in paused.stdout
    forced = platform.cli("promote", record["id"], "--environment", "production", "--force")
    assert forced.returncode == 0, forced.stderr
    platform.admin.wait_deployed(record["id"], "production", timeout=30)


# -- autoscaling and scale to zero ------------------------------------------------------


async def _slow_clients(url: str, clients: int, stop: threading.Event, seconds: float) -> list[int]:
    """``clients`` loops of slow requests until ``stop`` is set (at most ``seconds``)."""
    deadline = time.monotonic() + seconds
    statuses: list[int] = []

    async def loop() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while time.monotonic() < deadline and not stop.is_set():
                statuses.append((await http.post(url, json={"sleep": 0.4})).status_code)

    await asyncio.gather(*(loop() for _ in range(clients)))
    return statuses


def test_replicas_grow_to_max_under_load_and_shrink_after_the_delay(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    platform.admin.create_model("scaled")
    result = platform.cli(
        "autoscaling",
        "scaled",
        "production",
        "--min-replica",
        "1",
        "--max-replica",
        "3",
        "--concurrency-target",
        "1",
        "--autoscaling-window",
        "0.5",
        "--scale-down-delay",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert "max_replica" in result.stdout.lower()
    deploy(platform, model_copy(tmp_path, "s"), "scaled", "production")
    url = platform.url("/models/scaled/production/predict")
    stop = threading.Event()
    statuses: list[int] = []
    load = threading.Thread(
        target=lambda: statuses.extend(asyncio.run(_slow_clients(url, 4, stop, 30.0)))
    )
    load.start()
    try:
        wait_for(
            lambda: env_replicas(platform, "scaled", "production")["ready"] == 3,
            30,
            "max_replica ready replicas under load",
        )
        time.sleep(1.0)  # and the load keeps them: no scale-down while it lasts
        assert env_replicas(platform, "scaled", "production")["replicas"] == 3
    finally:
        stop.set()
        load.join(30)
    assert statuses and set(statuses) == {200}
    wait_for(
        lambda: env_replicas(platform, "scaled", "production")["replicas"] == 1,
        15,
        "scale down to min_replica",
    )


def test_min_replica_zero_scales_to_zero_parks_the_next_request_and_wakes(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    platform.admin.create_model("sleepy")
    platform.admin.autoscaling(
        "sleepy", "production", {"autoscaling_window": 0.2, "scale_down_delay": 0.5}
    )
    deployment = deploy(platform, model_copy(tmp_path, "z"), "sleepy", "production")
    record = wait_for(
        lambda: (d := platform.admin.deployment(deployment))["replicas"] == 0 and d,
        15,
        "scale to zero",
    )
    assert record["status"] == "scaled_to_zero"
    response = predict(platform, "/models/sleepy/production/predict", {"x": 5})
    assert response.status_code == 200 and response.json()["x"] == 5
    wait_for(lambda: platform.admin.deployment(deployment)["replicas"] == 0, 15, "zero again")
    woke = platform.cli("wake", "sleepy", "production", "--json")
    assert woke.returncode == 0 and '"waking"' in woke.stdout
    wait_for(lambda: platform.admin.deployment(deployment)["replicas"] >= 1, 30, "woken")
    host_wake = httpx.post(platform.url("/production/wake"), headers={"Host": "model-sleepy.x"})
    assert host_wake.status_code == 202


# -- failures ----------------------------------------------------------------------------


async def _pids(url: str) -> set[int]:
    """The pids answering concurrent slow requests (they spread over the replicas)."""
    async with httpx.AsyncClient(timeout=30) as http:
        replies = await asyncio.gather(*(http.post(url, json={"sleep": 0.3}) for _ in range(6)))
    return {reply.json()["pid"] for reply in replies}


def test_kill_9_of_a_replica_under_load_fails_only_its_requests_and_it_comes_back(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    platform.admin.create_model("crashy")
    platform.admin.autoscaling(
        "crashy", "production", {"min_replica": 2, "max_replica": 2, "concurrency_target": 100}
    )
    deploy(platform, model_copy(tmp_path, "c"), "crashy", "production")
    wait_for(lambda: env_replicas(platform, "crashy", "production")["ready"] == 2, 30, "2 ready")
    url = platform.url("/models/crashy/production/predict")
    pids = asyncio.run(_pids(url))
    assert len(pids) == 2
    victim = min(pids)

    async def run() -> list[tuple[int, int | None]]:
        async def one(http: httpx.AsyncClient) -> tuple[int, int | None]:
            response = await http.post(url, json={"sleep": 1.0})
            return response.status_code, response.json().get("pid")

        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32)) as http:
            tasks = [asyncio.create_task(one(http)) for _ in range(8)]
            await asyncio.sleep(0.5)
            os.kill(victim, signal.SIGKILL)
            results = list(await asyncio.gather(*tasks))
            after = [await one(http) for _ in range(4)]
        return results + after

    results = asyncio.run(run())
    failed = [status for status, _ in results if status != 200]
    assert failed and set(failed) == {502}
    assert 1 <= len(failed) <= 8
    assert all(pid != victim for status, pid in results if status == 200)
    survivor = (pids - {victim}).pop()
    wait_for(lambda: env_replicas(platform, "crashy", "production")["ready"] == 2, 30, "back")
    pids_after = asyncio.run(_pids(url))
    assert survivor in pids_after and victim not in pids_after and len(pids_after) == 2


def test_a_client_that_goes_away_cancels_the_work_on_the_replica(
    platform: PlatformProcess, markers: Path
) -> None:
    marker = markers / "gone"

    async def leave() -> None:
        async with httpx.AsyncClient(timeout=0.3) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(
                    platform.url("/models/crashy/production/predict"),
                    json={"sleep": 20, "marker": "gone"},
                )

    asyncio.run(leave())
    left = time.monotonic()
    wait_for(lambda: marker.exists() and marker.read_text() == "cancelled", 5, "cancellation")
    assert time.monotonic() - left < 2.0


def test_a_client_that_leaves_a_stream_stops_the_model_s_generator(
    platform: PlatformProcess, markers: Path
) -> None:
    marker = markers / "stream-gone"
    with httpx.stream(
        "POST",
        platform.url("/models/crashy/production/predict"),
        json={"stream": 200, "sleep": 0.05, "marker": "stream-gone"},
        timeout=30,
    ) as response:
        first = next(response.iter_text())
    assert first.startswith("v1:0;")
    left = time.monotonic()
    wait_for(lambda: marker.exists() and marker.read_text() == "cancelled", 5, "the generator")
    assert time.monotonic() - left < 2.0


def test_streams_pass_through_chunk_by_chunk(platform: PlatformProcess) -> None:
    with httpx.stream(
        "POST",
        platform.url("/models/crashy/production/predict"),
        json={"stream": 5, "sleep": 0.1},
        timeout=30,
    ) as response:
        pieces = [(time.monotonic(), chunk) for chunk in response.iter_text()]
    assert "".join(chunk for _, chunk in pieces) == "".join(f"v1:{i};" for i in range(5))
    assert len(pieces) >= 3  # not buffered into one
    assert pieces[-1][0] - pieces[0][0] > 0.2


def test_websocket_through_the_platform(platform: PlatformProcess) -> None:
    from websockets.sync.client import connect

    platform.admin.create_model("socket")
    from tests.platform.conftest import MODELS

    deploy(platform, MODELS / "chat_socket", "socket", "production")
    url = f"ws://127.0.0.1:{platform.port}/models/socket/production/websocket"
    with connect(url, open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "production: hi"
        ws.send("done")


# -- the development deployment ------------------------------------------------------------


def test_the_development_deployment_reloads_on_save_and_can_be_promoted(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    directory = model_copy(tmp_path, "dev", **{"model__version.txt": "d1"})
    result = platform.cli("deploy", str(directory), "--model", "devmodel", "--dev")
    assert result.returncode == 0, result.stderr
    dev_id = result.stdout.strip()
    url = "/models/devmodel/development/predict"
    assert predict(platform, url, {}).json()["version"] == "d1"
    (directory / "model" / "version.txt").write_text("d2")
    wait_for(lambda: predict(platform, url, {}).json()["version"] == "d2", 30, "the reload")
    promoted = platform.cli("promote", dev_id, "--environment", "production", "--json")
    assert promoted.returncode == 0, promoted.stderr
    answer = predict(platform, "/models/devmodel/production/predict", {}).json()
    assert answer["version"] == "d2" and answer["environment"] == "production"
    listing = platform.cli("deployments", "devmodel")
    assert "production" in listing.stdout and dev_id in listing.stdout


# -- bad input -----------------------------------------------------------------------------


def test_bad_admin_input_gets_a_clear_400_and_changes_nothing(platform: PlatformProcess) -> None:
    garbage = httpx.post(
        platform.url("/admin/v1/deployments"), params={"model": "junk"}, content=b"not a tarball"
    )
    assert garbage.status_code == 400 and "cannot be read" in garbage.json()["error"]
    assert all(model["name"] != "junk" for model in platform.admin.models())
    bad = httpx.patch(
        platform.url("/admin/v1/models/crashy/environments/production/autoscaling"),
        json={"max_replica": 0, "bogus": 1},
    )
    assert bad.status_code == 400
    assert "max_replica" in bad.json()["error"] and "bogus" in bad.json()["error"]
    name = httpx.post(platform.url("/admin/v1/models"), json={"name": "no spaces"})
    assert name.status_code == 400 and "letters, digits" in name.json()["error"]


def test_a_streamed_request_body_passes_through(platform: PlatformProcess) -> None:
    def pieces():  # type: ignore[no-untyped-def]
        yield b'{"x": '
        yield b'"streamed"}'

    response = httpx.post(
        platform.url("/models/crashy/production/predict"), content=pieces(), timeout=30
    )
    assert response.status_code == 200 and response.json()["x"] == "streamed"
