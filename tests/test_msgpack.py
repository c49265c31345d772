"""application/octet-stream bodies are msgpack, numpy arrays included, both ways."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import numpy as np

from kingpost.testing import InProcessServer
from tests.conftest import MODELS

OCTET = {"content-type": "application/octet-stream"}


def pack_array(array: np.ndarray) -> dict[str, object]:
    """The msgpack-numpy layout Truss clients send, written out by hand."""
    return {
        "nd": True,
        "type": array.dtype.str,
        "kind": "",
        "shape": list(array.shape),
        "data": array.tobytes(),
    }


def unpack_array(packed: dict[str, object]) -> np.ndarray:
    assert packed["nd"] is True
    data = packed["data"]
    assert isinstance(data, bytes)
    return np.frombuffer(data, dtype=np.dtype(str(packed["type"]))).reshape(packed["shape"])


def test_a_numpy_array_round_trips_through_predict(
    start_in_process: Callable[..., InProcessServer],
) -> None:
    server = start_in_process(MODELS / "numpy_arrays")
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    body = msgpack.packb({"array": pack_array(array), "label": "x"}, use_bin_type=True)
    response = server.client.post("/predict", content=body, headers=OCTET)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    reply = msgpack.unpackb(response.content, raw=False)
    np.testing.assert_array_equal(unpack_array(reply["doubled"]), array * 2)
    assert reply["dtype"] == "float32"
    assert reply["label"] == "x"
    assert reply["total"] == 15.0


def test_the_same_model_answers_json_with_lists(
    start_in_process: Callable[..., InProcessServer],
) -> None:
    server = start_in_process(MODELS / "sync_echo")
    body = msgpack.packb({"numbers": [1, 2, 3]}, use_bin_type=True)
    response = server.client.post("/predict", content=body, headers=OCTET)
    assert msgpack.unpackb(response.content, raw=False) == {"echo": {"numbers": [1, 2, 3]}}
