"""A model for async tests: what it does is chosen by the input.

{"n": 1, "delay": 0.3}              -> {"n": 1, "pid": ...} after a sleep ($ASYNC_TEST_DELAY)
{"mode": "fail"}                    -> raises (500)
{"mode": "bad"}                     -> 400
{"mode": "flaky", "key": k, "fails": 2}  -> 503 the first `fails` times per key, then succeeds
{"mode": "sleep", "seconds": 5}     -> sleeps (past request_timeout: 504)
load() waits (60 s at most) until the file $ASYNC_TEST_LOAD_GATE exists, when set.
Every call is logged to $ASYNC_TEST_LOG (one "start|end N PID TIME" line each) when set.
"""

import asyncio
import os
import time

from fastapi import HTTPException
from starlette.responses import JSONResponse


class Model:
    def __init__(self, **kwargs):
        self.log_path = os.environ.get("ASYNC_TEST_LOG")
        self.delay = float(os.environ.get("ASYNC_TEST_DELAY", "0.002"))
        self.flaky = {}

    def load(self):
        gate = os.environ.get("ASYNC_TEST_LOAD_GATE")
        deadline = time.monotonic() + 60
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _log(self, event, n):
        if self.log_path and n is not None:
            line = f"{event} {n} {os.getpid()} {time.time():.6f}\n"
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    async def predict(self, model_input):
        mode = model_input.get("mode") if isinstance(model_input, dict) else None
        if mode == "fail":
            raise RuntimeError("the model failed on purpose")
        if mode == "bad":
            raise HTTPException(status_code=400, detail="the model refused this input")
        if mode == "flaky":
            key = model_input["key"]
            seen = self.flaky.get(key, 0)
            self.flaky[key] = seen + 1
            if seen < model_input["fails"]:
                return JSONResponse({"error": "not yet"}, status_code=503)
            return {"key": key, "calls": seen + 1}
        if mode == "sleep":
            await asyncio.sleep(model_input["seconds"])
            return {"slept": model_input["seconds"]}
        n = model_input.get("n") if isinstance(model_input, dict) else None
        self._log("start", n)
        delay = model_input.get("delay", self.delay) if isinstance(model_input, dict) else 0
        if delay:
            await asyncio.sleep(delay)
        self._log("end", n)
        return {"n": n, "pid": os.getpid()}
