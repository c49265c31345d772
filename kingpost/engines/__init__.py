"""Config-only models: each engine is a Model class that Kingpost ships.

A model directory whose config.yaml has an ``engine:`` block needs no model.py;
the server constructs the engine's class exactly as it would a user's Model
(``__init__(config=..., ...)``, ``load()``, then the endpoint hooks).
"""

from __future__ import annotations

import importlib

from kingpost.errors import ConfigError

# kind -> "module:Class", imported only when used so that heavy engines stay optional.
ENGINE_CLASSES: dict[str, str] = {
    "llama_cpp": "kingpost.engines.llama_cpp:LlamaCppModel",
    "sentence_transformers": "kingpost.engines.sentence_transformers:SentenceTransformersModel",
    "vllm": "kingpost.engines.vllm:VLLMModel",
}


def engine_model_class(kind: str) -> type:
    """Return the Model class serving ``engine.kind``; ConfigError if unknown."""
    target = ENGINE_CLASSES.get(kind)
    if target is None:
        known = ", ".join(sorted(ENGINE_CLASSES))
        raise ConfigError(f"engine.kind: unknown engine {kind!r} (known: {known})")
    module_name, class_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)  # type: ignore[no-any-return]
