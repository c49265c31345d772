import threading
import time


class Model:
    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def predict(self, model_input):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.3)
        with self.lock:
            self.active -= 1
        return {"peak": self.peak}

    async def embeddings(self, model_input):
        import asyncio

        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.3)
        with self.lock:
            self.active -= 1
        return {"peak": self.peak}
