"""Answers with its version (model/version.txt), environment and pid; can be slow or stream."""

import asyncio
import os
import time
from pathlib import Path

MARKERS = os.environ.get("MARKER_DIR")


class Model:
    def __init__(self, environment=None):
        self.version = (Path(__file__).parent / "version.txt").read_text().strip()
        self.environment = (environment or {}).get("name")

    def load(self):
        delay = Path(__file__).parent / "load_delay.txt"
        if delay.exists():
            time.sleep(float(delay.read_text()))

    async def predict(self, model_input):
        delay = float(model_input.get("sleep", 0))
        if model_input.get("stream"):
            return self._stream(int(model_input["stream"]), delay, model_input.get("marker"))
        if delay:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                if MARKERS and model_input.get("marker"):
                    Path(MARKERS, model_input["marker"]).write_text("cancelled")
                raise
        return {
            "version": self.version,
            "environment": self.environment,
            "pid": os.getpid(),
            "x": model_input.get("x"),
        }

    async def _stream(self, count, delay, marker=None):
        try:
            for i in range(count):
                yield f"{self.version}:{i};"
                if delay:
                    await asyncio.sleep(delay)
        except (asyncio.CancelledError, GeneratorExit):
            if MARKERS and marker:
                Path(MARKERS, marker).write_text("cancelled")
            raise
