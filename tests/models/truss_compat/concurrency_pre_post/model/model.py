import threading
import time


class Model:
    def __init__(self, **kwargs):
        self._lock = threading.Lock()
        self._in_predict = 0
        self._max_in_predict = 0
        self._in_preprocess = 0
        self._max_in_preprocess = 0

    def preprocess(self, model_input):
        with self._lock:
            self._in_preprocess += 1
            self._max_in_preprocess = max(self._max_in_preprocess, self._in_preprocess)
        time.sleep(0.4)
        with self._lock:
            self._in_preprocess -= 1
        return model_input

    def predict(self, model_input):
        with self._lock:
            self._in_predict += 1
            self._max_in_predict = max(self._max_in_predict, self._in_predict)
        time.sleep(0.1)
        with self._lock:
            self._in_predict -= 1
        return model_input

    def postprocess(self, model_output):
        time.sleep(0.2)
        return {
            "id": model_output.get("id"),
            "max_in_predict": self._max_in_predict,
            "max_in_preprocess": self._max_in_preprocess,
        }
