"""A fatal signal in model code is never silent: it names the signal and every stack."""

from __future__ import annotations

import httpx
import pytest

from kingpost.testing import ServerProcess


@pytest.mark.parametrize(
    ("name", "words"), [("SIGILL", "Illegal instruction"), ("SIGSEGV", "Segmentation fault")]
)
def test_a_fatal_signal_in_predict_logs_it_with_every_thread_stack_and_exits_non_zero(
    start_server, name: str, words: str
) -> None:
    server: ServerProcess = start_server("native_crash")
    with pytest.raises(httpx.TransportError):
        httpx.post(server.url("/predict"), json={"signal": name}, timeout=30)
    code = server.wait_exit(30)
    logs = server.logs()
    assert code != 0
    assert f"Fatal Python error: {words}" in logs
    assert "crash_in_native_code" in logs  # the model's own frame
    assert "Current thread 0x" in logs  # the thread that crashed ...
    assert "\nThread 0x" in logs  # ... and the others, the event loop's among them
