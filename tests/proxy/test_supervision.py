"""Kingpost starts the custom server, waits for it, restarts it, and stops it without orphans."""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from kingpost.proxy.process import group_is_alive
from kingpost.testing import ServerProcess, free_port
from tests.proxy.custom_servers import FastAPIServer, server_env, write_custom_server


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def server_group(kingpost: ServerProcess) -> int:
    """The process group of the custom server, from Kingpost's log."""
    deadline = time.monotonic() + 30
    while (match := re.search(r"started the custom server \(pid (\d+)\)", kingpost.logs())) is None:
        assert time.monotonic() < deadline, kingpost.logs()
        time.sleep(0.05)
    return int(match[1])


def exit_code_of(kingpost: ServerProcess) -> int:
    """Start ``kingpost``, expecting it to give up by itself; its exit code."""
    with contextlib.suppress(RuntimeError):  # it may exit before it first answers
        kingpost.start()
    return kingpost.wait_exit(30)


def test_readiness_is_503_until_the_server_is_ready(
    start_fastapi_server: Callable[..., FastAPIServer],
) -> None:
    server = start_fastapi_server("--startup-delay", "3", wait_ready=False)
    readiness = httpx.get(server.url("/v1/models/model"))
    assert readiness.status_code == 503
    assert "not ready" in readiness.json()["error"]
    assert httpx.get(server.url("/")).status_code == 200  # Kingpost itself is alive
    assert httpx.post(server.url("/predict"), json={}).status_code == 503
    server.kingpost.wait_until("/v1/models/model", 60)
    assert httpx.post(server.url("/predict"), json={"a": 1}).json()["echo"] == {"a": 1}


def test_a_server_that_exits_before_ready_makes_kingpost_exit_with_its_last_lines(
    tmp_path: Path,
) -> None:
    command = "echo 'loading weights'; echo 'weights.bin: no such file' >&2; exit 4"
    model_dir = write_custom_server(tmp_path, command, free_port())
    kingpost = ServerProcess(model_dir, env=server_env(), wait_ready=False)
    assert exit_code_of(kingpost) != 0
    logs = kingpost.logs()
    failure = logs[logs.index("exited with code 4 before it was ready") :]
    assert "loading weights" in failure
    assert "weights.bin: no such file" in failure


def test_a_server_not_ready_in_time_is_killed_and_kingpost_exits(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    command = f"echo $$ > {shlex.quote(str(pid_file))}; exec sleep 600"
    model_dir = write_custom_server(
        tmp_path, command, free_port(), docker_server={"startup_timeout": 1.5}
    )
    kingpost = ServerProcess(model_dir, env=server_env(), wait_ready=False)
    assert exit_code_of(kingpost) != 0
    assert "not ready on /health within 1.5 s" in kingpost.logs()
    assert not is_running(int(pid_file.read_text()))


def test_a_crash_answers_502_then_the_server_is_restarted(
    start_fastapi_server: Callable[..., FastAPIServer],
) -> None:
    server = start_fastapi_server(docker_server={"restart_delay": 1.0})
    first_pid = httpx.get(server.url("/pids")).json()["pid"]

    crashed = httpx.post(server.url("/crash"))
    assert crashed.status_code == 502
    assert "error" in crashed.json()
    down = httpx.post(server.url("/predict"), json={})
    assert down.status_code == 502
    assert "custom server" in down.json()["error"]
    assert httpx.get(server.url("/v1/models/model")).status_code == 503

    server.kingpost.wait_until("/v1/models/model", 60)
    assert httpx.get(server.url("/pids")).json()["pid"] != first_pid
    assert httpx.post(server.url("/predict"), json={"b": 2}).json()["echo"] == {"b": 2}
    assert "exited with code 17 while serving" in server.kingpost.logs()


def test_sigterm_stops_the_server_and_everything_it_started(
    start_fastapi_server: Callable[..., FastAPIServer],
) -> None:
    server = start_fastapi_server("--spawn-grandchild")
    pids = httpx.get(server.url("/pids")).json()
    assert is_running(pids["pid"])
    assert is_running(pids["grandchild"])

    assert server.kingpost.stop() in (0, -signal.SIGTERM)  # not SIGKILLed by the test
    assert not is_running(pids["pid"])
    assert not is_running(pids["grandchild"])


def test_killing_kingpost_outright_takes_the_server_down_too(
    start_fastapi_server: Callable[..., FastAPIServer],
) -> None:
    server = start_fastapi_server("--spawn-grandchild")
    pids = httpx.get(server.url("/pids")).json()
    process = server.kingpost.process
    assert process is not None
    process.kill()  # SIGKILL: Kingpost gets no chance to stop anything
    process.wait(10)
    deadline = time.monotonic() + 10
    while is_running(pids["pid"]) or is_running(pids["grandchild"]):
        assert time.monotonic() < deadline, "the server outlived Kingpost"
        time.sleep(0.05)


def test_sigterm_while_the_server_starts_stops_it(
    start_fastapi_server: Callable[..., FastAPIServer],
) -> None:
    server = start_fastapi_server("--startup-delay", "60", wait_ready=False)
    group = server_group(server.kingpost)
    started = time.monotonic()
    assert server.kingpost.stop() in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 10
    assert not group_is_alive(group)


def test_a_server_ignoring_sigterm_is_killed_after_the_grace_period(
    start_fastapi_server: Callable[..., FastAPIServer],
) -> None:
    server = start_fastapi_server("--ignore-sigterm", docker_server={"stop_grace_period": 1})
    pid = httpx.get(server.url("/pids")).json()["pid"]
    started = time.monotonic()
    assert server.kingpost.stop() in (0, -signal.SIGTERM)  # not SIGKILLed by the test
    assert 1.0 <= time.monotonic() - started < 10
    assert not is_running(pid)
    assert "did not exit 1 s after SIGTERM" in server.kingpost.logs()


def test_the_server_output_is_in_the_log_with_a_prefix(
    start_fastapi_server: Callable[..., FastAPIServer],
) -> None:
    server = start_fastapi_server()
    pid_line = next(
        line for line in server.kingpost.logs().splitlines() if "test server ready" in line
    )
    assert "kingpost.proxy.server: [server " in pid_line


def test_environment_variables_and_secrets_reach_the_server(
    start_fastapi_server: Callable[..., FastAPIServer], tmp_path: Path
) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "from_file").write_text("file-value\n")
    server = start_fastapi_server(
        kingpost_args=("--secrets-dir", str(secrets_dir)),
        env={"TRUSS_SECRET_from_env": "env-value"},
        environment_variables={"GREETING": "hello"},
        secrets={"from_file": None, "from_env": None},
    )

    def seen(variable: str, secret: str) -> dict[str, str | None]:
        url = server.url("/environment")
        return httpx.get(url, params={"variable": variable, "secret": secret}).json()

    assert seen("GREETING", "-")["variable"] == "hello"
    assert seen("TRUSS_SECRET_from_file", "from_file") == {
        "variable": "file-value",
        "secret_file": "file-value",
    }
    assert seen("TRUSS_SECRET_from_env", "from_env") == {
        "variable": "env-value",
        "secret_file": "env-value",
    }


def test_a_server_port_already_in_use_is_refused_before_starting(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        model_dir = write_custom_server(tmp_path, "echo started; exec sleep 600", port)
        kingpost = ServerProcess(model_dir, env=server_env(), wait_ready=False)
        assert exit_code_of(kingpost) != 0
    assert f"127.0.0.1:{port} (docker_server.server_port) is already in use" in kingpost.logs()
    assert "started" not in kingpost.logs()


def test_several_workers_are_refused_for_a_custom_server(tmp_path: Path) -> None:
    model_dir = write_custom_server(tmp_path, "exec sleep 600", free_port())
    kingpost = ServerProcess(model_dir, "--workers", "2", env=server_env(), wait_ready=False)
    assert exit_code_of(kingpost) != 0
    assert "served by one worker" in kingpost.logs()
