"""Prove, before readiness, that the installed llama.cpp build runs on this CPU.

A llama-cpp-python wheel compiled with instructions the machine does not allow loads
a model without complaint and dies with SIGILL on the first decode: a native build on
a VM that advertises AMX but traps it, or a wheel built on a newer CPU and reused from
pip's cache. ``LlamaCppModel.load()`` therefore runs one real decode step in a short
child process first (a native crash there cannot take the server with it), and turns
a failure into a ``ModelLoadError`` that names the cause and the fix.

    python -m kingpost.engines.llama_cpp_probe MODEL.gguf [--threads N]

prints the build's CPU features on its first line, decodes a few prompt tokens and one
generated token, and exits 0. ``KINGPOST_LLAMA_PROBE=0`` skips the probe.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from kingpost.errors import ModelLoadError

PROBE_TIMEOUT_S = 180.0
# How a build for the wrong CPU dies: SIGILL at an instruction the CPU refuses, or SIGSEGV
# (seen with a native AMX build on a VM that traps AMX's tile set-up).
_BUILD_MISMATCH_SIGNALS = frozenset({signal.SIGILL, signal.SIGSEGV, signal.SIGBUS})
PORTABLE_REBUILD = (
    ". scripts/llama-build-env.sh && "
    "pip install --force-reinstall --no-cache-dir --no-deps llama-cpp-python"
)


def probe_enabled() -> bool:
    return os.environ.get("KINGPOST_LLAMA_PROBE", "1").lower() not in ("0", "false", "no", "off")


def probe_command(gguf: Path, threads: int) -> list[str]:
    """The child that decodes once with the same build and thread count as the engine."""
    return [sys.executable, "-m", __name__, str(gguf), "--threads", str(threads)]


def run_probe(command: list[str], timeout: float = PROBE_TIMEOUT_S) -> str:
    """Run the probe child; return the build's feature line, or raise ModelLoadError."""
    try:
        result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"the llama.cpp start-up probe did not finish a single decode in {timeout:.0f} s"
        ) from None
    output = result.stdout.decode(errors="replace").strip()
    features = output.splitlines()[0] if output else "unknown"
    if result.returncode == 0:
        return features
    raise ModelLoadError(describe_failure(result.returncode, features, result.stderr))


def describe_failure(returncode: int, features: str, stderr: bytes) -> str:
    """The message for a probe that exited with ``returncode`` (negative: a signal)."""
    if returncode < 0:
        name = _signal_name(-returncode)
        cause = f"died with {name} before finishing one decode"
        if -returncode in _BUILD_MISMATCH_SIGNALS:
            cause += (
                ": this llama-cpp-python build most likely uses CPU instructions this machine "
                "does not allow (a native build that picked up AMX on a VM that advertises "
                "it, or a wheel built on another CPU and reused from pip's cache)"
            )
    else:
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        cause = f"exited with code {returncode}" + (": " + " | ".join(tail) if tail else "")
    return (
        f"llama.cpp cannot run on this machine: the start-up probe {cause}. "
        f"Build features: {features}. "
        f"Rebuild llama-cpp-python portably from the repository root: {PORTABLE_REBUILD}"
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def decode_once(gguf: Path, threads: int) -> None:
    """Load ``gguf`` with a tiny context, decode a short prompt and one sampled token."""
    import llama_cpp

    print(llama_cpp.llama_print_system_info().decode(errors="replace").strip(), flush=True)
    llama_cpp.llama_backend_init()
    model_params = llama_cpp.llama_model_default_params()
    model_params.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), model_params)
    if not model:
        raise SystemExit(f"llama.cpp could not load {gguf}")
    vocab = llama_cpp.llama_model_get_vocab(model)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = 64
    params.n_threads = params.n_threads_batch = threads
    params.no_perf = True
    context = llama_cpp.llama_init_from_model(model, params)
    if not context:
        raise SystemExit("llama.cpp could not create a context")
    text = b"The capital of France is"
    tokens = (llama_cpp.llama_token * 32)()
    count = llama_cpp.llama_tokenize(vocab, text, len(text), tokens, 32, True, False)
    if llama_cpp.llama_decode(context, llama_cpp.llama_batch_get_one(tokens, count)) != 0:
        raise SystemExit("llama.cpp failed to decode the probe prompt")
    logits = llama_cpp.llama_get_logits_ith(context, count - 1)
    vocabulary = llama_cpp.llama_vocab_n_tokens(vocab)
    best = max(range(vocabulary), key=lambda token: logits[token])
    following = (llama_cpp.llama_token * 1)(best)
    if llama_cpp.llama_decode(context, llama_cpp.llama_batch_get_one(following, 1)) != 0:
        raise SystemExit("llama.cpp failed to decode a generated token")
    llama_cpp.llama_free(context)
    llama_cpp.llama_model_free(model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kingpost.engines.llama_cpp_probe")
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    decode_once(args.gguf, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
