"""A model answering every OpenAI and Anthropic route by repeating the prompt.

Each method returns the JSON shape its endpoint expects, written out by hand,
and streams server-sent events when the request asks for ``stream``.
"""

import hashlib
import json
import time
import uuid

import fastapi


def _sse(data, event=None):
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n"


def _reply_words(text):
    return [w + " " for w in f"You said: {text}".split()]


def _chat_prompt(messages):
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content)
    return ""


class Model:
    def __init__(self, config):
        self.name = config.get("model_name") or "parrot"

    def predict(self, model_input):
        return {"echo": model_input}

    async def chat_completions(self, model_input, request: fastapi.Request):
        words = _reply_words(_chat_prompt(model_input.get("messages", [])))
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        usage = {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)}
        if not model_input.get("stream"):
            return {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": self.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(words)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        return self._chat_stream(completion_id, created, words, usage, model_input)

    async def _chat_stream(self, completion_id, created, words, usage, model_input):
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": self.name}
        yield _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        for word in words:
            yield _sse({**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]})
        yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (model_input.get("stream_options") or {}).get("include_usage"):
            yield _sse({**base, "choices": [], "usage": usage})
        yield "data: [DONE]\n\n"

    def completions(self, model_input):
        prompt = model_input.get("prompt", "")
        words = _reply_words(prompt if isinstance(prompt, str) else " ".join(prompt))
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if not model_input.get("stream"):
            return {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": self.name,
                "choices": [{"index": 0, "text": "".join(words), "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)},
            }

        def stream():
            for word in words:
                yield _sse({
                    "id": completion_id, "object": "text_completion", "created": created, "model": self.name,
                    "choices": [{"index": 0, "text": word, "logprobs": None, "finish_reason": None}],
                })
            yield _sse({
                "id": completion_id, "object": "text_completion", "created": created, "model": self.name,
                "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}],
            })
            yield "data: [DONE]\n\n"

        return stream()

    def embeddings(self, model_input):
        texts = model_input.get("input", [])
        if isinstance(texts, str):
            texts = [texts]
        data = []
        for index, text in enumerate(texts):
            digest = hashlib.sha256(str(text).encode()).digest()
            vector = [b / 255.0 for b in digest[:8]]
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(str(t).split()) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": self.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def responses(self, model_input):
        prompt = model_input.get("input", "")
        if isinstance(prompt, list):
            prompt = _chat_prompt(prompt)
        text = "".join(_reply_words(prompt))
        response_id = f"resp_{uuid.uuid4().hex}"
        item_id = f"msg_{uuid.uuid4().hex}"
        words = text.split(" ")
        usage = {
            "input_tokens": 3, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(words), "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 3 + len(words),
        }
        message = {
            "id": item_id, "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        response = {
            "id": response_id, "object": "response", "created_at": int(time.time()),
            "model": self.name, "status": "completed", "output": [message],
            "parallel_tool_calls": False, "tool_choice": "auto", "tools": [], "usage": usage,
        }
        if not model_input.get("stream"):
            return response
        return self._responses_stream(response, message, words)

    async def _responses_stream(self, response, message, words):
        seq = 0

        def event(kind, **fields):
            nonlocal seq
            seq += 1
            return _sse({"type": kind, "sequence_number": seq, **fields}, event=kind)

        pending = {**response, "status": "in_progress", "output": [], "usage": None}
        yield event("response.created", response=pending)
        yield event("response.in_progress", response=pending)
        item = {**message, "status": "in_progress", "content": []}
        yield event("response.output_item.added", output_index=0, item=item)
        part = {"type": "output_text", "text": "", "annotations": []}
        yield event("response.content_part.added", item_id=message["id"], output_index=0, content_index=0, part=part)
        for i, word in enumerate(words):
            delta = word if i == len(words) - 1 else word + " "
            yield event("response.output_text.delta", item_id=message["id"], output_index=0,
                        content_index=0, delta=delta, logprobs=[])
        text = message["content"][0]["text"]
        yield event("response.output_text.done", item_id=message["id"], output_index=0,
                    content_index=0, text=text, logprobs=[])
        yield event("response.content_part.done", item_id=message["id"], output_index=0,
                    content_index=0, part={**part, "text": text})
        yield event("response.output_item.done", output_index=0, item=message)
        yield event("response.completed", response=response)

    async def messages(self, model_input):
        prompt = _chat_prompt(model_input.get("messages", []))
        words = _reply_words(prompt)
        message_id = f"msg_{uuid.uuid4().hex}"
        usage = {"input_tokens": 3, "output_tokens": len(words)}
        if not model_input.get("stream"):
            return {
                "id": message_id, "type": "message", "role": "assistant", "model": self.name,
                "content": [{"type": "text", "text": "".join(words)}],
                "stop_reason": "end_turn", "stop_sequence": None, "usage": usage,
            }
        return self._messages_stream(message_id, words, usage)

    async def _messages_stream(self, message_id, words, usage):
        start = {
            "id": message_id, "type": "message", "role": "assistant", "model": self.name,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 0},
        }
        yield _sse({"type": "message_start", "message": start}, event="message_start")
        yield _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                   event="content_block_start")
        for word in words:
            yield _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}},
                       event="content_block_delta")
        yield _sse({"type": "content_block_stop", "index": 0}, event="content_block_stop")
        yield _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]}}, event="message_delta")
        yield _sse({"type": "message_stop"}, event="message_stop")
