"""SDK clients for the engine tests that serve a model: each module defines ``server``
(its ``kingpost serve``), and these give the official OpenAI and Anthropic clients on
it; a module that needs other URLs defines its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import openai
import pytest

from kingpost.testing import ServerProcess
from tests.conftest import ROOT


@contextmanager
def serve_from_checkout(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``kingpost serve`` of a test model whose code imports from this checkout (the
    scripted engines), with its state in a fresh directory."""
    path = os.environ.get("PYTHONPATH")
    env = {
        "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
        "KINGPOST_STATE_DIR": str(tmp_path_factory.mktemp("state")),
    }
    with ServerProcess(model_dir, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url("/v1"), api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def claude(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url(""), api_key="unused", max_retries=0)
