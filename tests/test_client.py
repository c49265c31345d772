"""kingpost predict: call a running server, print JSON nicely and streams as they arrive."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kingpost.testing import ServerProcess, free_port
from tests.conftest import MODELS

Start = Callable[..., ServerProcess]
COMPAT = MODELS / "truss_compat"


def predict(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kingpost", "predict", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


def test_a_json_reply_is_printed_indented(start_server: Start) -> None:
    server = start_server(MODELS / "sync_echo")
    result = predict("--url", server.base_url, "-d", '{"a": [1, 2]}')
    assert result.returncode == 0
    assert result.stdout == '{\n  "echo": {\n    "a": [\n      1,\n      2\n    ]\n  }\n}\n'


def test_the_body_can_come_from_a_file_or_stdin(start_server: Start, tmp_path: Path) -> None:
    server = start_server(MODELS / "sync_echo")
    (tmp_path / "body.json").write_text('{"from": "file"}')
    from_file = predict("--url", server.base_url, "-f", str(tmp_path / "body.json"))
    assert '"from": "file"' in from_file.stdout
    from_stdin = predict("--url", server.base_url, "-f", "-", stdin='{"from": "stdin"}')
    assert '"from": "stdin"' in from_stdin.stdout


def test_a_url_with_a_path_is_called_as_given(start_server: Start) -> None:
    server = start_server(COMPAT / "openai_endpoints")
    result = predict("--url", server.url("/v1/completions"), "-d", "{}")
    assert result.stdout == '"completions"\n'


def test_a_stream_is_printed_as_it_arrives(start_server: Start) -> None:
    server = start_server(COMPAT / "streaming_generator")
    started = time.monotonic()
    body = '{"count": 4, "delay": 0.4}'
    command = [sys.executable, "-m", "kingpost", "predict", "--url", server.base_url]
    process = subprocess.Popen([*command, "--stream", "-d", body], stdout=subprocess.PIPE)
    assert process.stdout is not None
    first = process.stdout.read(1)
    first_at = time.monotonic() - started
    rest = process.stdout.read()
    finished_at = time.monotonic() - started
    assert process.wait(10) == 0
    assert first + rest == b"0123"
    assert finished_at - first_at > 0.8  # the first chunk was printed long before the end


def test_a_server_error_exits_non_zero_with_its_message(start_server: Start) -> None:
    server = start_server(COMPAT / "pydantic_typed_io")
    result = predict("--url", server.base_url, "-d", '{"repeat": 2}')
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error 400: ")
    assert "prompt" in result.stderr


def test_no_server_exits_non_zero_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = predict("--url", url, "-d", "{}")
    assert result.returncode == 1
    assert f"could not call {url}/predict" in result.stderr


def test_a_body_that_is_not_json_is_refused_before_calling() -> None:
    result = predict("--url", "http://127.0.0.1:9", "-d", "{not json")
    assert result.returncode == 2
    assert "not usable JSON" in result.stderr
