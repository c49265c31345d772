"""kingpost serve --watch: edits reload the model; the old version serves until the new loads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from kingpost.testing import ServerProcess

Start = Callable[..., ServerProcess]

MODEL = """\
import os
import time


def wait_for(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{{path}} never appeared")
        time.sleep(0.01)


class Model:
    def load(self):
        {load_extra}

    def predict(self, model_input):
        if "hold" in model_input:
            open(model_input["started"], "w").close()
            wait_for(model_input["hold"])
        return {{"version": {version!r}, "env": os.environ.get("FLAVOUR")}}
"""


def write_model(directory: Path, version: str, load_extra: str = "pass") -> None:
    (directory / "model").mkdir(parents=True, exist_ok=True)
    text = MODEL.format(version=version, load_extra=load_extra)
    (directory / "model" / "model.py").write_text(text)


@pytest.fixture
def signals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files the test and the model signal each other with, outside the watched directory."""
    return tmp_path_factory.mktemp("signals")


def wait_for_file(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def version(server: ServerProcess) -> str:
    reply = httpx.post(server.url("/predict"), json={}, timeout=10)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["version"])


def wait_for_version(server: ServerProcess, expected: str, timeout: float = 10) -> float:
    """Seconds until predict answers with ``expected``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if version(server) == expected:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"still not {expected!r} after {timeout} s:\n{server.logs()}")


def wait_for_log(server: ServerProcess, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.logs():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{server.logs()}"
        time.sleep(0.02)


def test_an_edit_is_served_within_a_second(start_server: Start, tmp_path: Path) -> None:
    write_model(tmp_path, "one")
    server = start_server(tmp_path, "--watch")
    assert version(server) == "one"
    write_model(tmp_path, "two")
    assert wait_for_version(server, "two") < 1.0
    write_model(tmp_path, "three")
    assert wait_for_version(server, "three") < 1.0
    assert "reloaded in" in server.logs()


def test_the_old_version_serves_while_the_new_one_loads(
    start_server: Start, tmp_path: Path, signals: Path
) -> None:
    write_model(tmp_path, "old")
    server = start_server(tmp_path, "--watch")
    loaded = signals / "load may finish"
    write_model(tmp_path, "new", load_extra=f"wait_for({str(loaded)!r})")
    wait_for_log(server, "reloading")
    # The new version is held in load() until the test lets it finish.
    assert [version(server) for _ in range(5)] == ["old"] * 5  # each one a 200
    assert httpx.get(server.url("/v1/models/model")).status_code == 200
    loaded.touch()
    wait_for_version(server, "new")


def test_a_broken_edit_is_reported_and_the_old_version_keeps_serving(
    start_server: Start, tmp_path: Path
) -> None:
    write_model(tmp_path, "good")
    server = start_server(tmp_path, "--watch")
    (tmp_path / "model" / "model.py").write_text("class Model(:\n")
    wait_for_log(server, "reload failed")
    assert "SyntaxError" in server.logs()
    assert "the previous version keeps serving" in server.logs()
    assert version(server) == "good"
    write_model(tmp_path, "fixed")
    wait_for_version(server, "fixed")


def test_a_failing_load_in_the_new_version_keeps_the_old_one(
    start_server: Start, tmp_path: Path
) -> None:
    write_model(tmp_path, "stable")
    server = start_server(tmp_path, "--watch")
    write_model(tmp_path, "bad", load_extra="raise RuntimeError('cannot find weights')")
    wait_for_log(server, "reload failed")
    assert "cannot find weights" in server.logs()
    assert version(server) == "stable"
    assert httpx.get(server.url("/v1/models/model")).status_code == 200


def test_a_request_in_flight_finishes_on_the_version_that_took_it(
    start_server: Start, tmp_path: Path, signals: Path
) -> None:
    write_model(tmp_path, "first")
    # room for other requests beside the held one (the default is one at a time)
    (tmp_path / "config.yaml").write_text("runtime:\n  predict_concurrency: 4\n")
    server = start_server(tmp_path, "--watch")
    started, finish = signals / "started", signals / "finish"
    held = {"hold": str(finish), "started": str(started)}
    slow: list[httpx.Response] = []
    worker = threading.Thread(
        target=lambda: slow.append(httpx.post(server.url("/predict"), json=held, timeout=60))
    )
    worker.start()
    try:
        wait_for_file(started)  # the first version has taken the request
        write_model(tmp_path, "second")
        wait_for_version(server, "second")
    finally:
        finish.touch()
        worker.join(60)
    assert slow[0].status_code == 200
    assert slow[0].json()["version"] == "first"


def test_a_config_change_reloads_too(start_server: Start, tmp_path: Path) -> None:
    write_model(tmp_path, "v")
    (tmp_path / "config.yaml").write_text("environment_variables:\n  FLAVOUR: plain\n")
    server = start_server(tmp_path, "--watch")
    assert httpx.post(server.url("/predict"), json={}).json()["env"] == "plain"
    (tmp_path / "config.yaml").write_text("environment_variables:\n  FLAVOUR: spicy\n")
    wait_for_log(server, "reloaded in")
    assert httpx.post(server.url("/predict"), json={}).json()["env"] == "spicy"


def test_a_model_broken_at_start_waits_for_a_fix(start_server: Start, tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text("import no_such_module_anywhere\n")
    server = start_server(tmp_path, "--watch", wait_ready=False)
    assert httpx.get(server.url("/")).status_code == 200
    refused = httpx.post(server.url("/predict"), json={})
    assert refused.status_code == 503
    assert "no_such_module_anywhere" in refused.json()["error"]
    assert "reloads on changes" in refused.json()["error"]
    url = f"ws://127.0.0.1:{server.port}/v1/websocket"
    with connect(url) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    write_model(tmp_path, "repaired")
    server.wait_until("/v1/models/model", 10)
    assert version(server) == "repaired"
