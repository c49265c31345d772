"""The /v1 hook routes: OpenAI's chat completions, completions, embeddings and
responses, Anthropic's messages, and the two token counts (Anthropic's
``/v1/messages/count_tokens``, OpenAI's ``/v1/responses/input_tokens``). Each calls
the model's hook of that name; a model without it answers 404.

Their errors are rendered in the dialect of the API (``ENDPOINT_ROUTES``), so the
official SDKs show the message and retry what is retryable.
"""

from __future__ import annotations

from kingpost.errors import HookNotFoundError
from kingpost.protocols import anthropic_stream_error, openai_stream_error
from kingpost.server.errors import ErrorDialect
from kingpost.server.exchange import Exchange
from kingpost.server.inputs import model_request, parse_inputs
from kingpost.server.model_service import ModelService
from kingpost.server.replies import EVENT_STREAM, reply_for
from kingpost.server.streaming import HookStream, StreamResult

# hook name -> (path, error dialect)
ENDPOINT_ROUTES = {
    "chat_completions": ("/v1/chat/completions", ErrorDialect.OPENAI),
    "completions": ("/v1/completions", ErrorDialect.OPENAI),
    "embeddings": ("/v1/embeddings", ErrorDialect.OPENAI),
    "messages": ("/v1/messages", ErrorDialect.ANTHROPIC),
    "responses": ("/v1/responses", ErrorDialect.OPENAI),
    # token counting: Anthropic's, and OpenAI's for the responses API
    "count_tokens": ("/v1/messages/count_tokens", ErrorDialect.ANTHROPIC),
    "input_tokens": ("/v1/responses/input_tokens", ErrorDialect.OPENAI),
}


_DEADLINE = "the request ran past its deadline (Request-Timeout-Ms / Request-Deadline-Ms)"
# The terminal event of a stream stopped by the client's deadline, by dialect.
PAST_DEADLINE = {
    ErrorDialect.OPENAI: openai_stream_error(_DEADLINE).encode(),
    ErrorDialect.ANTHROPIC: anthropic_stream_error(_DEADLINE, type="timeout_error").encode(),
}


class EndpointHook:
    """``POST`` on the route of one /v1 hook."""

    def __init__(self, service: ModelService, hook: str) -> None:
        self.service = service
        self.hook = hook
        self.runtime = service.runtime
        self.past_deadline = PAST_DEADLINE[ENDPOINT_ROUTES[hook][1]]

    async def __call__(self, ex: Exchange) -> None:
        service = self.service
        if service.drain.draining or not service.lifecycle.loaded:
            service.check_ready()  # raises the 503 that says why
        with service.drain:
            await self.call(ex)

    async def call(self, ex: Exchange) -> None:
        runner = self.service.hooks.get(self.hook)
        if runner is None:
            raise HookNotFoundError(f"this model does not implement {self.hook}")
        runtime = self.runtime
        body = await ex.read_body(runtime.max_request_bytes)
        inputs = parse_inputs(ex, body, runtime.max_json_values) if runner.takes_inputs else None
        request = model_request(ex, body) if runner.takes_request else None
        async with ex.within(runtime.request_timeout):
            result = await runner(ex, inputs, request)
            if isinstance(result, StreamResult):
                stream = HookStream(result, ex, self.service.threads)
                await stream.open(runtime.request_timeout, runtime.streaming_read_timeout)
        if isinstance(result, StreamResult):
            # /v1 streams are always event streams, whatever the client's Accept says.
            await stream.send(ex, EVENT_STREAM, runtime.streaming_read_timeout, self.past_deadline)
        else:
            await reply_for(result, False).send(ex)
