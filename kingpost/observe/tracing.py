"""OpenTelemetry traces of a model server (extra ``kingpost[otel]``), off by default.

Tracing is on when the standard variables ask for an exporter
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or
``OTEL_TRACES_EXPORTER=otlp|console``) and ``OTEL_SDK_DISABLED`` is not true;
everything else (service name, resource attributes, sampler, headers,
batching) is read by the OpenTelemetry SDK from its own ``OTEL_*`` variables.
Truss's contract is kept too: with ``runtime.enable_tracing_data: true`` and
``OTEL_TRACING_NDJSON_FILE`` set, one ``predict-endpoint`` span per predict
request is written to that file as one JSON line.

The spans: the request (an incoming ``traceparent`` is its parent), each
preprocess / predict / postprocess hook, and the engine's generation with the
GenAI semantic-convention attributes (model, token counts, time to first
token). When tracing is off :data:`ACTIVE` is None and nothing is wrapped:
the request path is the same code as without this module.

    tracing = configure(config.runtime.enable_tracing_data)   # once, at start
    app = TracedApp(app, tracing, route_name) if tracing else app
    runner = tracing.traced_hook(runner) if tracing else runner
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger("kingpost.tracing")

Scope = MutableMapping[str, Any]

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
NDJSON_VARIABLE = "OTEL_TRACING_NDJSON_FILE"
TRUSS_SPAN = "predict-endpoint"
INSTRUMENTATION = "kingpost"

# The active tracing of this process, read by engines for their generation spans.
ACTIVE: Tracing | None = None


def wants_otlp(environ: Mapping[str, str]) -> bool:
    """Whether the standard variables ask for traces to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters == "none":
        return False
    return any(environ.get(name) for name in ENDPOINT_VARIABLES) or bool(exporters)


def wants_truss_file(enable_tracing_data: bool, environ: Mapping[str, str]) -> Path | None:
    path = environ.get(NDJSON_VARIABLE)
    return Path(path) if enable_tracing_data and path else None


class NDJSONSpanExporter:
    """Writes each finished span as one line of JSON (Truss's debugging format)."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = "".join(span.to_json(indent=None) + "\n" for span in spans)
        with self._lock:
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Tracing:
    """The tracers of a server: the main one and Truss's file-only one (either may be None)."""

    def __init__(self, tracer: Any, truss_tracer: Any, providers: list[Any]) -> None:
        from opentelemetry import propagate, trace

        self.tracer = tracer
        self.truss_tracer = truss_tracer
        self.providers = providers
        self._propagator = propagate.get_global_textmap()
        self._trace = trace

    # -- requests ----------------------------------------------------------------

    def extract(self, headers: Sequence[tuple[bytes, bytes]]) -> Any:
        """The parent context from a request's ``traceparent`` / ``tracestate`` headers."""
        carrier: dict[str, str] = {}
        for name, value in headers:
            key = name.decode("latin-1").lower()
            if key in ("traceparent", "tracestate", "baggage"):
                carrier[key] = value.decode("latin-1")
        return self._propagator.extract(carrier) if carrier else None

    @contextmanager
    def hook_span(self, hook: str) -> Iterator[Any]:
        """A span around one hook (preprocess, predict, postprocess, an endpoint hook)."""
        if self.tracer is None:
            yield None
            return
        with self.tracer.start_as_current_span(hook, attributes={"kingpost.hook": hook}) as span:
            yield span

    def traced_hook(self, runner: Any) -> Any:
        """``runner`` (a hook runner: ``await runner(ex, inputs, request)``) inside a span."""
        return TracedHook(runner, self) if self.tracer is not None else runner

    # -- generations ---------------------------------------------------------------

    def generation_span(self, operation: str, model: str, params: Any) -> Any:
        """A GenAI span for one engine generation; end it with :meth:`end_generation`."""
        if self.tracer is None:
            return None
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": INSTRUMENTATION,
            "gen_ai.request.model": model,
        }
        for attribute, value in (
            ("gen_ai.request.max_tokens", getattr(params, "max_tokens", None)),
            ("gen_ai.request.temperature", getattr(params, "temperature", None)),
            ("gen_ai.request.top_p", getattr(params, "top_p", None)),
            ("gen_ai.request.top_k", getattr(params, "top_k", None)),
            ("gen_ai.request.seed", getattr(params, "seed", None)),
        ):
            if value is not None:
                attributes[attribute] = value
        return self.tracer.start_span(
            f"{operation} {model}", kind=self._trace.SpanKind.INTERNAL, attributes=attributes
        )

    def end_generation(
        self,
        span: Any,
        model: str,
        input_tokens: int,
        output_tokens: int,
        ttft: float | None,
        finish_reason: str,
    ) -> None:
        span.set_attribute("gen_ai.response.model", model)
        span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
        if ttft is not None:
            span.set_attribute("gen_ai.server.time_to_first_token", ttft)
        span.end()

    def shutdown(self) -> None:
        for provider in self.providers:
            provider.shutdown()


class TracedHook:
    """A hook runner whose every call is a span named after the hook.

    It stands in for the runner (its other attributes are the runner's), so the
    core swaps it in once, when it binds the hooks, and only when tracing is on.
    """

    def __init__(self, runner: Any, tracing: Tracing) -> None:
        self.runner = runner
        self.tracing = tracing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)

    async def __call__(self, ex: Any, inputs: Any, request: Any) -> Any:
        with self.tracing.hook_span(self.runner.name):
            return await self.runner(ex, inputs, request)


def configure(
    enable_tracing_data: bool = False,
    environ: Mapping[str, str] | None = None,
    service_name: str = "kingpost",
) -> Tracing | None:
    """Set up tracing as the environment asks, or return None (and set nothing up).

    Also makes it :data:`ACTIVE` for the engines of this process.
    """
    global ACTIVE
    if ACTIVE is not None:
        return ACTIVE  # once per process: a reloaded model keeps the providers it had
    environ = os.environ if environ is None else environ
    otlp = wants_otlp(environ)
    truss_file = wants_truss_file(enable_tracing_data, environ)
    if not otlp and truss_file is None:
        ACTIVE = None
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        logger.warning(
            "tracing was asked for (OTEL_* variables) but OpenTelemetry is not installed: "
            "pip install 'kingpost[otel]'"
        )
        ACTIVE = None
        return None
    providers = []
    tracer = truss_tracer = None
    if otlp:
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES come first; the model's name otherwise.
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service_name}))
        provider = TracerProvider(resource=resource)
        for exporter in _exporters(environ):
            if isinstance(exporter, ConsoleSpanExporter):
                provider.add_span_processor(SimpleSpanProcessor(exporter))
            else:
                provider.add_span_processor(BatchSpanProcessor(exporter))
        providers.append(provider)
        tracer = provider.get_tracer(INSTRUMENTATION)
    if truss_file is not None:
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "TrussServer"}))
        provider.add_span_processor(SimpleSpanProcessor(NDJSONSpanExporter(truss_file)))  # type: ignore[arg-type]
        providers.append(provider)
        truss_tracer = provider.get_tracer("truss_server")
    ACTIVE = Tracing(tracer, truss_tracer, providers)
    return ACTIVE


def _exporters(environ: Mapping[str, str]) -> list[Any]:
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")]
    exporters: list[Any] = []
    for name in names:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
            )
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcExporter,
                )

                exporters.append(GrpcExporter())
            else:  # http/protobuf, OTLP's default
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                exporters.append(OTLPSpanExporter())
        elif name:
            logger.warning("OTEL_TRACES_EXPORTER=%s is not supported; use otlp or console", name)
    return exporters


class TracedApp:
    """An ASGI app with a server span around each HTTP request.

    ``route_of(path)`` names the route (``predict``, ``chat_completions``...);
    predict requests also get Truss's ``predict-endpoint`` span when that is on.
    Only installed when tracing is on.
    """

    def __init__(self, app: Any, tracing: Tracing, route_of: Callable[[str], str]) -> None:
        self.app = app
        self.drain: Any = getattr(app, "drain", None)  # what the drain on SIGTERM reads
        self.tracing = tracing
        self.route_of = route_of
        from opentelemetry import context, trace

        self._context = context
        self._trace = trace

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # the rest of what the wrapped app offers

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracing = self.tracing
        parent = tracing.extract(scope.get("headers", ()))
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        route = self.route_of(path)
        started = time.time()
        status = 0
        request_id = ""

        async def traced_send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-request-id":
                        request_id = value.decode("latin-1")
            await send(message)

        spans = []
        if tracing.tracer is not None:
            spans.append(
                tracing.tracer.start_span(
                    f"{method} {route}",
                    context=parent,
                    kind=self._trace.SpanKind.SERVER,
                    attributes={
                        "http.request.method": method,
                        "url.path": path,
                        "http.route": path,
                        "kingpost.route": route,
                    },
                )
            )
        if tracing.truss_tracer is not None and route == "predict":
            spans.append(tracing.truss_tracer.start_span(TRUSS_SPAN, context=parent))
        if not spans:
            await self.app(scope, receive, send)
            return
        token = self._context.attach(self._trace.set_span_in_context(spans[0]))
        try:
            await self.app(scope, receive, traced_send)
        finally:
            self._context.detach(token)
            for span in spans:
                span.set_attribute("http.response.status_code", status)
                if request_id:
                    span.set_attribute("kingpost.request_id", request_id)
                span.set_attribute("duration_sec", time.time() - started)
                if status >= 500:
                    span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
                span.end()
