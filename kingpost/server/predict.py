"""The predict route: read body -> parse -> preprocess -> predict -> postprocess -> reply.

The hot path of the server, kept to one screen; everything it decides on was
decided when the model loaded (``ModelService.hooks``).
"""

from __future__ import annotations

import orjson
from starlette.responses import Response

from kingpost.errors import HookNotFoundError
from kingpost.server.exchange import Exchange
from kingpost.server.inputs import model_request, parse_inputs
from kingpost.server.model_service import ModelService
from kingpost.server.replies import JSON, OCTET_STREAM, BytesReply, reply_for
from kingpost.server.streaming import HookStream, StreamResult


class Predict:
    """``POST /predict`` (and its aliases) for the model of ``service``."""

    def __init__(self, service: ModelService) -> None:
        self.service = service
        self.runtime = service.runtime
        self.pass_request = service.descriptor.takes_request_anywhere

    async def __call__(self, ex: Exchange) -> None:
        service = self.service
        if service.drain.draining or not service.lifecycle.loaded:
            service.check_ready()  # raises the 503 that says why
        with service.drain:
            await self.predict(ex)

    async def predict(self, ex: Exchange) -> None:
        hooks = self.service.hooks
        predict = hooks.get("predict")
        if predict is None:
            raise HookNotFoundError("this model has no predict method")
        preprocess = hooks.get("preprocess")
        postprocess = hooks.get("postprocess")
        runtime = self.runtime
        body = await ex.read_body(runtime.max_request_bytes)
        first = preprocess or predict
        inputs = parse_inputs(ex, body, runtime.max_json_values) if first.takes_inputs else None
        request = model_request(ex, body) if self.pass_request else None
        async with ex.within(runtime.request_timeout):
            if preprocess is not None:
                inputs = await preprocess(ex, inputs, request)
                if isinstance(inputs, StreamResult):
                    raise TypeError("preprocess must not return a generator")
            result = await predict(ex, inputs, request)
            if isinstance(result, StreamResult):
                stream = HookStream(result, ex, self.service.threads)
                if ex.accept == JSON:
                    text = await stream.gather(runtime.streaming_read_timeout)
                    await BytesReply(orjson.dumps(text)).send(ex)
                    return
                await stream.open(runtime.request_timeout, runtime.streaming_read_timeout)
            elif postprocess is not None and not isinstance(result, Response):
                result = await postprocess(ex, result, request)
        if isinstance(result, StreamResult):
            await stream.send(ex, OCTET_STREAM, runtime.streaming_read_timeout)
        else:
            await reply_for(result, ex.content_type.startswith(OCTET_STREAM)).send(ex)
