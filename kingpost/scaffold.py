"""``kingpost init DIR``: write a model directory that serves as it is.

    create_model_dir(Path("my-model"))               # predict
    create_model_dir(Path("my-llm"), openai=True)    # the five /v1 methods too

The generated code is a starting point to edit; ``kingpost serve DIR --watch``
reloads it on every save.
"""

from __future__ import annotations

from pathlib import Path

from kingpost.errors import ScaffoldError

CONFIG = """\
model_name: {name}
# Packages the model imports; `kingpost serve --install` installs them.
requirements: []
environment_variables: {{}}
# Secrets the model reads (values from /secrets/<name> or TRUSS_SECRET_<name>).
secrets: {{}}
model_metadata:
  example_model_input: {example}
runtime:
  predict_concurrency: 1
"""

PREDICT_MODEL = '''\
"""The model served by `kingpost serve`. Edit predict(); load() runs once at start."""

from typing import Any


class Model:
    def __init__(self, **kwargs: Any) -> None:
        self._config = kwargs["config"]
        self._data_dir = kwargs["data_dir"]
        self._model = None

    def load(self) -> None:
        # Load weights here (from self._data_dir, say); requests wait until this returns.
        self._model = str.split

    def predict(self, model_input: dict[str, Any]) -> dict[str, Any]:
        text = str(model_input.get("text", ""))
        words = self._model(text)
        return {"text": text, "words": len(words)}
'''

OPENAI_MODEL = '''\
"""An OpenAI- and Anthropic-compatible model served by `kingpost serve`.

It answers by echoing the last user message; replace `_generate` with a real
model. Point an SDK at http://127.0.0.1:8080/environments/production/sync/v1
(OpenAI) or http://127.0.0.1:8080/environments/production/sync (Anthropic).
"""

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any


def _event(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\\n" if event else ""
    return f"{head}data: {json.dumps(data)}\\n\\n"


def _text(content: Any) -> str:
    """Message content as text: a string, or a list of parts with text in them."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


class Model:
    def __init__(self, **kwargs: Any) -> None:
        self._name = kwargs["config"].get("model_name") or "model"

    def load(self) -> None:
        pass

    def _generate(self, prompt: str, max_tokens: int) -> list[str]:
        words = f"You said: {prompt}".split()
        return [word + " " for word in words[:max_tokens]]

    def predict(self, model_input: dict[str, Any]) -> dict[str, Any]:
        prompt = str(model_input.get("prompt", ""))
        return {"output": "".join(self._generate(prompt, 256))}

    def chat_completions(self, model_input: dict[str, Any]) -> Any:
        messages = model_input.get("messages") or []
        user = [m for m in messages if m.get("role") == "user"]
        prompt = _text(user[-1].get("content")) if user else ""
        tokens = self._generate(prompt, int(model_input.get("max_tokens") or 256))
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if model_input.get("stream"):
            return self._chat_stream(ident, created, tokens)
        return {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": self._name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(tokens)},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(prompt, tokens),
        }

    def _chat_stream(self, ident: str, created: int, tokens: list[str]) -> Iterator[str]:
        base = {"id": ident, "object": "chat.completion.chunk", "created": created}
        base["model"] = self._name
        for i, token in enumerate(tokens):
            delta = {"content": token, **({"role": "assistant"} if i == 0 else {})}
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            yield _event({**base, "choices": [choice]})
        yield _event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        yield "data: [DONE]\\n\\n"

    def completions(self, model_input: dict[str, Any]) -> Any:
        prompt = str(model_input.get("prompt", ""))
        tokens = self._generate(prompt, int(model_input.get("max_tokens") or 16))
        base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion"}
        base.update(created=int(time.time()), model=self._name)
        if model_input.get("stream"):
            return self._completion_stream(base, tokens)
        choice = {"index": 0, "text": "".join(tokens), "finish_reason": "stop", "logprobs": None}
        return {**base, "choices": [choice], "usage": _usage(prompt, tokens)}

    def _completion_stream(self, base: dict[str, Any], tokens: list[str]) -> Iterator[str]:
        for token in tokens:
            choice = {"index": 0, "text": token, "finish_reason": None, "logprobs": None}
            yield _event({**base, "choices": [choice]})
        yield "data: [DONE]\\n\\n"

    def embeddings(self, model_input: dict[str, Any]) -> dict[str, Any]:
        texts = model_input.get("input", "")
        texts = [texts] if isinstance(texts, str) else list(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(str(text))}
            for i, text in enumerate(texts)
        ]
        used = sum(len(str(text).split()) for text in texts)
        usage = {"prompt_tokens": used, "total_tokens": used}
        return {"object": "list", "data": data, "model": self._name, "usage": usage}

    def messages(self, model_input: dict[str, Any]) -> Any:
        user = [m for m in model_input.get("messages") or [] if m.get("role") == "user"]
        prompt = _text(user[-1].get("content")) if user else ""
        tokens = self._generate(prompt, int(model_input.get("max_tokens") or 256))
        message = {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "model": self._name,
            "content": [{"type": "text", "text": "".join(tokens)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": len(prompt.split()), "output_tokens": len(tokens)},
        }
        if model_input.get("stream"):
            return self._messages_stream(message, tokens)
        return message

    def _messages_stream(self, message: dict[str, Any], tokens: list[str]) -> Iterator[str]:
        start = {**message, "content": [], "stop_reason": None}
        yield _event({"type": "message_start", "message": start}, "message_start")
        block = {"type": "content_block_start", "index": 0}
        yield _event({**block, "content_block": {"type": "text", "text": ""}}, block["type"])
        for token in tokens:
            delta = {"type": "text_delta", "text": token}
            yield _event({"type": "content_block_delta", "index": 0, "delta": delta},
                         "content_block_delta")
        yield _event({"type": "content_block_stop", "index": 0}, "content_block_stop")
        delta = {"stop_reason": "end_turn", "stop_sequence": None}
        usage = {"output_tokens": len(tokens)}
        yield _event({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta")
        yield _event({"type": "message_stop"}, "message_stop")

    def responses(self, model_input: dict[str, Any]) -> dict[str, Any]:
        given = model_input.get("input", "")
        if isinstance(given, list):
            given = " ".join(_text(item.get("content")) for item in given if isinstance(item, dict))
        tokens = self._generate(str(given), int(model_input.get("max_output_tokens") or 256))
        text = "".join(tokens)
        content = [{"type": "output_text", "text": text, "annotations": []}]
        output = {"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "completed"}
        output.update(role="assistant", content=content)
        usage = {"input_tokens": len(str(given).split()), "output_tokens": len(tokens)}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        return {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": self._name,
            "output": [output],
            "output_text": text,
            "usage": usage,
        }


def _usage(prompt: str, tokens: list[str]) -> dict[str, int]:
    prompt_tokens = len(prompt.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(tokens),
        "total_tokens": prompt_tokens + len(tokens),
    }


def _vector(text: str, size: int = 16) -> list[float]:
    """A deterministic stand-in embedding: bytes of a hash, scaled to [-1, 1]."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(byte / 127.5 - 1.0, 6) for byte in digest[:size]]
'''


def create_model_dir(path: Path, openai: bool = False) -> list[Path]:
    """Write config.yaml and model/model.py under ``path``; returns the files written."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ScaffoldError(f"{path} already exists and is not empty")
    name = path.resolve().name
    example = '{"prompt": "Hello"}' if openai else '{"text": "hello world"}'
    files = {
        path / "config.yaml": CONFIG.format(name=name, example=example),
        path / "model" / "__init__.py": "",
        path / "model" / "model.py": OPENAI_MODEL if openai else PREDICT_MODEL,
        path / "data" / ".gitkeep": "",
    }
    for file, text in files.items():
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    return list(files)
