"""Binary bodies: msgpack with numpy arrays, for ``application/octet-stream``."""

from __future__ import annotations

from typing import Any

import msgpack

from kingpost.errors import InvalidInputError

# numpy arrays travel as maps {"nd": True, "type", "kind", "shape", "data"}, the
# layout that msgpack-numpy (and so Truss's clients) use.


def _decode_hook(obj: dict[Any, Any]) -> Any:
    if "nd" not in obj or "data" not in obj:
        return obj
    import numpy as np

    dtype: Any = obj["type"]
    if obj.get("kind") == "V":
        dtype = [tuple(str(part) for part in field) for field in dtype]
    if obj["nd"]:
        return np.ndarray(buffer=obj["data"], dtype=np.dtype(dtype), shape=obj["shape"]).copy()
    return np.frombuffer(obj["data"], dtype=np.dtype(dtype))[0]


def _encode_default(obj: Any) -> Any:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy absent means no arrays to encode
        raise TypeError(f"cannot encode {type(obj).__name__}") from None
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "V":
            kind, dtype = "V", obj.dtype.descr
        else:
            kind, dtype = "", obj.dtype.str
        return {
            "nd": True,
            "type": dtype,
            "kind": kind,
            "shape": list(obj.shape),
            "data": np.ascontiguousarray(obj).tobytes(),
        }
    if isinstance(obj, np.generic):
        return {"nd": False, "type": obj.dtype.str, "kind": "", "data": obj.tobytes()}
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    raise TypeError(f"cannot encode {type(obj).__name__} as msgpack")


def decode_msgpack(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, object_hook=_decode_hook, raw=False, strict_map_key=False)
    except Exception as exc:
        raise InvalidInputError(f"request body is not valid msgpack: {exc}") from None


def encode_msgpack(value: Any) -> bytes:
    return msgpack.packb(value, default=_encode_default, use_bin_type=True)  # type: ignore[no-any-return]
