"""The platform's routing hop as an OpenTelemetry span (only when tracing is on).

The span continues the client's ``traceparent`` and names the model, target
and deployment the request went to; the request then goes to the replica
with the span's own ``traceparent``, so the replica's request, hook and
generation spans join the same trace under it.

    app._forward = TracedForward(app._forward, tracing)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kingpost.errors import RequestError
from kingpost.platform.replica import Message, Receive, Scope, Send
from kingpost.platform.router import Invocation

if TYPE_CHECKING:
    from kingpost.observe.tracing import Tracing
    from kingpost.platform.pool import ReplicaPool

Forward = Callable[["ReplicaPool", Invocation, Scope, Receive, Send], Awaitable[None]]
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})


class TracedForward:
    """``forward(pool, invocation, scope, receive, send)`` in a span whose context goes on."""

    def __init__(self, forward: Forward, tracing: Tracing) -> None:
        from opentelemetry import context, propagate, trace

        self.forward = forward
        self.tracer = tracing.tracer
        self.tracing = tracing
        self._context = context
        self._propagator = propagate.get_global_textmap()
        self._trace = trace

    async def __call__(
        self, pool: ReplicaPool, invocation: Invocation, scope: Scope, receive: Receive, send: Send
    ) -> None:
        trace = self._trace
        method = scope.get("method", "GET")
        span = self.tracer.start_span(
            f"{method} platform {invocation.endpoint}",
            context=self.tracing.extract(scope["headers"]),
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "kingpost.route": invocation.endpoint,
                "kingpost.model": pool.stats.labels[0] or invocation.model,
                "kingpost.target": invocation.kind,
                "kingpost.environment": pool.key[1] or "",
                "kingpost.deployment": pool.key[0],
                "kingpost.replica_path": invocation.path,
            },
        )
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(span))
        headers = [(n, v) for n, v in scope["headers"] if n not in _TRACE_HEADERS]
        headers += [(name.encode(), value.encode("latin-1")) for name, value in carrier.items()]
        status = 0

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = self._context.attach(trace.set_span_in_context(span))
        try:
            await self.forward(pool, invocation, {**scope, "headers": headers}, receive, noted)
        except RequestError as exc:
            status = status or exc.status_code
            raise
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            self._context.detach(token)
            span.set_attribute("http.response.status_code", status)
            if status >= 500 or status == 0:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            span.end()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.forward, name)
