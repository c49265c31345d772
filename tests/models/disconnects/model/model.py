"""Records what happens to work whose client went away, in files under MARKER_DIR."""

import asyncio
import os
import time
from pathlib import Path

import fastapi

MARKERS = Path(os.environ["MARKER_DIR"])


class Model:
    async def predict(self, model_input):
        mode = model_input["mode"]
        (MARKERS / f"{mode}_started").write_text("yes")
        if mode == "async":
            try:
                await asyncio.sleep(20)
            except asyncio.CancelledError:
                (MARKERS / "async_cancelled").write_text("yes")
                raise
            (MARKERS / "async_finished").write_text("yes")
            return "done"
        if mode == "async_gen":
            return self._async_gen()
        if mode == "sync_gen":
            return self._sync_gen()
        raise ValueError(mode)

    async def _async_gen(self):
        try:
            for i in range(200):
                yield f"{i};"
                await asyncio.sleep(0.05)
        except (asyncio.CancelledError, GeneratorExit):
            (MARKERS / "async_gen_stopped").write_text("yes")
            raise

    def _sync_gen(self):
        pulled = 0
        try:
            for i in range(200):
                pulled += 1
                (MARKERS / "sync_gen_pulled").write_text(str(pulled))
                yield f"{i};"
                time.sleep(0.05)
        finally:
            (MARKERS / "sync_gen_closed").write_text(str(pulled))

    def completions(self, model_input, request: fastapi.Request):
        event = request.state.watch_disconnect()
        started = time.monotonic()
        (MARKERS / "thread_started").write_text("yes")
        while time.monotonic() - started < 20:
            if event.wait(0.05):
                (MARKERS / "thread_saw_disconnect").write_text(str(time.monotonic() - started))
                return {"stopped": True}
        return {"stopped": False}

    async def chat_completions(self, model_input, request: fastapi.Request):
        (MARKERS / "polling_started").write_text("yes")
        try:
            for _ in range(400):
                if await request.is_disconnected():
                    (MARKERS / "polled_disconnect").write_text("seen while polling")
                    return {"stopped": True}
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            # Kingpost cancels async hooks when the client leaves; the request says why.
            if await request.is_disconnected():
                (MARKERS / "polled_disconnect").write_text("seen on cancel")
            raise
        return {"stopped": False}
