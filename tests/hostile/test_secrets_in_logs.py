"""A secret's value never appears in a log line or an error body, even with --dev."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from kingpost.testing import ServerProcess

SECRET = "hunter2-very-secret-value"

MODEL = """
import logging


class Model:
    def __init__(self, secrets):
        self.token = secrets["token"]

    def predict(self, model_input):
        logging.getLogger("my.model").warning("calling out with token %s", self.token)
        raise RuntimeError(f"the backend refused token {self.token}")
"""


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_secret_read_by_the_model_is_redacted_from_logs_and_bodies(
    start_server: Callable[..., ServerProcess], tmp_path: Path, log_format: str
) -> None:
    model_dir = tmp_path / "model_dir"
    (model_dir / "model").mkdir(parents=True)
    (model_dir / "config.yaml").write_text("secrets:\n  token: null\n")
    (model_dir / "model" / "model.py").write_text(MODEL)
    env = {"TRUSS_SECRET_token": SECRET}
    server = start_server(model_dir, "--dev", "--log-format", log_format, env=env)
    reply = httpx.post(server.url("/predict"), json={})
    assert reply.status_code == 500
    assert "refused token [secret]" in reply.json()["error"] and SECRET not in reply.text
    server.stop()
    logs = server.logs()
    assert "calling out with token [secret]" in logs
    assert "the backend refused token [secret]" in logs
    assert SECRET not in logs
