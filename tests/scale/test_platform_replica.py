"""``kingpost up`` with an environment on ``backend: ray``: a Serve application per environment.

One platform for the module, joining the shared ``owner`` cluster; its
``kingpost.yaml`` puts production on Ray with scale to zero after a short delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kingpost.platform.settings import Autoscaling
from kingpost.scale.platform_replica import scaling_of
from tests.platform.conftest import MODELS, PlatformProcess, model_copy, pid_alive, wait_for
from tests.scale.conftest import (
    RAY_STARTUP_TIMEOUT,
    REPLICA_HEADER,
    ClusterOwner,
    listeners,
    process_tree,
    requires_ray,
)

pytestmark = requires_ray

CONFIG = """model_name: versioned
runtime:
  predict_concurrency: 64
resources:
  cpu: "0.1"
  memory: 64Mi
"""
SCALE_DOWN_DELAY = 3


@pytest.fixture(scope="module")
def platform(owner: ClusterOwner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("ray-platform")
    v1 = _model(root, "v1")
    socket_config = {"config.yaml": CONFIG.replace("versioned", "chat-socket")}
    chat = model_copy(root, "socket", MODELS / "chat_socket", **socket_config)
    file = root / "kingpost.yaml"
    file.write_text(
        f"""models:
  echo:
    directory: {v1}
    environments:
      production:
        backend: ray
        min_replica: 0
        max_replica: 1
        autoscaling_window: 1
        scale_down_delay: {SCALE_DOWN_DELAY}
  socket:
    directory: {chat}
    environments:
      production: {{backend: ray, min_replica: 1, max_replica: 1}}
"""
    )
    process = PlatformProcess(root / "home", str(file), "--ray-address", owner.address)
    process.start()
    try:
        wait_for(
            lambda: _answers(process, "/models/echo/production/predict"),
            RAY_STARTUP_TIMEOUT,
            "production on Ray answering",
            interval=0.5,
        )
        yield process, root
    finally:
        process.close()


def _model(root: Path, name: str) -> Path:
    version = {"model__version.txt": name}
    return model_copy(root, name, **{"config.yaml": CONFIG}, **version)


def _answers(platform: PlatformProcess, path: str) -> bool:
    try:
        return httpx.post(platform.url(path), json={"x": 1}, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def _production(platform: PlatformProcess, model: str = "echo") -> str:
    return str(platform.admin.environment(model, "production")["deployment_id"])


def test_settings_map_to_serve_autoscaling() -> None:
    settings = Autoscaling(
        min_replica=0,
        max_replica=4,
        autoscaling_window=2,
        scale_down_delay=30,
        concurrency_target=4,
        target_utilization_percentage=50,
        backend="ray",
    )
    config = scaling_of(settings).autoscaling_config()
    assert config["min_replicas"] == 0 and config["max_replicas"] == 4
    assert config["target_ongoing_requests"] == 2.0
    assert config["look_back_period_s"] == 2
    assert config["downscale_delay_s"] == config["downscale_to_zero_delay_s"] == 30
    assert config["upscale_delay_s"] == 0


def test_predict_through_the_platform_urls_reaches_a_ray_replica(platform: Any) -> None:
    process, _ = platform
    for path, headers in [
        ("/models/echo/production/predict", {}),
        ("/production/predict", {"host": "model-echo.example"}),
        ("/predict", {"host": "model-echo-production.example"}),
        ("/models/echo/production/sync/v1/models/model:predict", {}),
    ]:
        reply = httpx.post(process.url(path), json={"x": 7}, headers=headers, timeout=30)
        assert reply.status_code == 200, (path, reply.text)
        assert reply.json()["x"] == 7 and reply.json()["environment"] == "production"
        assert reply.headers[REPLICA_HEADER]  # answered by a Serve replica


def test_a_model_error_keeps_its_status(platform: Any) -> None:
    process, _ = platform
    reply = httpx.post(
        process.url("/models/echo/production/predict"), content=b"{not json", timeout=30
    )
    assert reply.status_code == 400


def test_a_websocket_through_the_platform_reaches_a_ray_replica(platform: Any) -> None:
    from websockets.sync.client import connect

    process, _ = platform
    wait_for(lambda: _production(process, "socket") != "None", 120, "socket deployed", 0.5)
    url = f"ws://127.0.0.1:{process.port}/models/socket/production/websocket"
    with connect(url, open_timeout=60) as ws:
        assert ws.response is not None and ws.response.headers[REPLICA_HEADER]
        ws.send("hi")
        assert ws.recv(timeout=30) == "production: hi"
        ws.send("done")


def test_the_environment_is_a_serve_application(platform: Any, owner: ClusterOwner) -> None:
    process, _ = platform
    assert f"{_production(process)}-production" in owner.apps()
    replicas = process.admin.environment("echo", "production")["replicas"]["list"]
    assert [r["backend"] for r in replicas] == ["ray"]


def test_min_replica_zero_scales_to_zero_on_ray_and_back(
    platform: Any, owner: ClusterOwner
) -> None:
    process, _ = platform
    app = f"{_production(process)}-production"
    wait_for(lambda: _serve_replicas(owner, app) == 0, 60, "Serve scaled the app to zero", 0.5)
    reply = httpx.post(process.url("/models/echo/production/predict"), json={"x": 1}, timeout=60)
    assert reply.status_code == 200  # parked in Serve while a replica started
    assert _serve_replicas(owner, app) == 1


def test_promotion_between_two_deployments_fails_no_request(
    platform: Any, owner: ClusterOwner
) -> None:
    process, root = platform
    old = _production(process)
    new = process.admin.deploy(_model(root, "v2"), "echo")["id"]
    process.admin.wait_deployed(new, None, timeout=60)
    per_client = asyncio.run(_promote_under_load(process, new))
    answers = [a for results in per_client for a in results]
    assert len(answers) > 20
    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200]
    for results in per_client:  # each client sees the old deployment, then the new one
        versions = [version for _, version in results]
        flip = versions.index("v2")
        assert set(versions[:flip]) == {"v1"} and set(versions[flip:]) == {"v2"}
    wait_for(lambda: f"{old}-production" not in owner.apps(), 60, "the old application deleted")
    assert f"{new}-production" in owner.apps()


async def _promote_under_load(process: PlatformProcess, new: str) -> list[list[tuple[int, str]]]:
    """Four clients posting in a loop across the promotion; per client: (status, version)."""
    url = process.url("/models/echo/production/predict")
    stop = asyncio.Event()

    async def client(results: list[tuple[int, str]]) -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            for _ in range(5000):
                if stop.is_set():
                    return
                try:
                    reply = await http.post(url, json={"x": 1})
                    version = reply.json().get("version", "") if reply.status_code == 200 else ""
                    results.append((reply.status_code, version))
                except httpx.HTTPError as exc:
                    results.append((0, repr(exc)))

    per_client: list[list[tuple[int, str]]] = [[] for _ in range(4)]
    clients = [asyncio.create_task(client(results)) for results in per_client]
    await asyncio.sleep(1.0)
    await asyncio.to_thread(process.admin.promote, new, "production")
    await asyncio.to_thread(process.admin.wait_deployed, new, "production", RAY_STARTUP_TIMEOUT)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*clients), 60)
    return per_client


def _serve_replicas(owner: ClusterOwner, app: str) -> int:
    assert owner.process is not None
    tree = process_tree(owner.process.pid)
    return sum(1 for command in tree.values() if command.startswith(f"ray::ServeReplica:{app}:"))


def test_up_with_backend_ray_starts_a_loopback_cluster_and_sigterm_stops_it(
    tmp_path: Path,
) -> None:
    file = tmp_path / "kingpost.yaml"
    file.write_text(
        f"models:\n  echo:\n    directory: {_model(tmp_path, 'v1')}\n"
        "    environments:\n      production: {min_replica: 1, max_replica: 1}\n"
    )
    process = PlatformProcess(tmp_path / "home", str(file), "--backend", "ray")
    process.start()
    try:
        wait_for(
            lambda: _answers(process, "/models/echo/production/predict"),
            RAY_STARTUP_TIMEOUT,
            "production on a local Ray cluster answering",
            interval=0.5,
        )
        assert process.process is not None
        tree = process_tree(process.process.pid)
        assert any("raylet" in command for command in tree.values())
        outside = [f for f in listeners(tree) if f.address not in ("127.0.0.1", "::1")]
        assert outside == [], outside
        process.stop()  # SIGTERM: the platform deletes the application and stops Ray
        wait_for(lambda: not [pid for pid in tree if pid_alive(pid)], 30, "every process gone")
        assert "SIGTERM received" not in process.logs()  # Ray's own handler did not take it
    finally:
        process.close()
