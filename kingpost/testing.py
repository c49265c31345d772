"""Run a real ``kingpost serve`` process for tests and benchmarks, or its app in process.

with ServerProcess(Path("examples/echo")) as server:
    httpx.post(server.url("/predict"), json={"x": 1})

with InProcessServer(Path("examples/echo")) as server:
    server.client.post("/predict", json={"x": 1})
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import httpx

from kingpost.logs import AccessLog, RequestIdFilter, TextFormatter, access_log, use_access_log
from kingpost.ports import free_port as free_port

# The line ``kingpost serve`` logs once its socket is bound (text or JSON format), and
# the supervisor's line when it forked workers. The port is followed by " (" or ":".
_LISTENING = re.compile(r"(?:listening|\d+ workers) on https?://[^\s/\"]+:(\d+)(?=[ (:])")
_QUIET_LEVELS = {"warning", "warn", "error", "critical", "fatal"}


class ServerProcess:
    """A ``kingpost serve DIR`` child process on 127.0.0.1.

    The server binds port 0 (unless ``--port`` is among ``args``) and ``start()``
    reads the port it got from its "listening on" log line, so parallel runs
    never race for a port. ``start()`` returns once the server answers liveness
    (and readiness, unless ``wait_ready=False``); ``stop()`` sends SIGTERM, then
    SIGKILL after a grace period. Its combined output is kept in a file,
    readable with ``logs()``.
    """

    def __init__(
        self,
        model_dir: Path | str,
        *args: str,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        startup_timeout: float = 60.0,
        command: list[str] | None = None,
        headers: dict[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.args = list(args)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.wait_ready = wait_ready
        self.startup_timeout = startup_timeout
        self.command = command
        # Polled with ``headers`` (an API key) and ``verify`` (a test CA with --ssl-certfile).
        self.headers = headers or {}
        self.verify = verify
        self.scheme = "https" if "--ssl-certfile" in self.args else "http"
        self._fixed_port = _option(self.args, "--port")
        level = _option(self.args, "--log-level")
        if self._fixed_port is None and level is not None and level.lower() in _QUIET_LEVELS:
            raise ValueError(
                f"--log-level {level} hides the line ServerProcess reads the port from: "
                "pass --port too, or keep the level at info"
            )
        self._port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        # The log file lives as long as the server object, not a with-block.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="kingpost-", suffix=".log", delete=False
        )

    @property
    def port(self) -> int:
        """The port the server listens on; known once ``start()`` has seen it bind."""
        if self._port is None:
            raise RuntimeError("the server's port is known once start() has returned")
        return self._port

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> ServerProcess:
        command = self.command or [sys.executable, "-m", "kingpost", "serve"]
        port_args = [] if self._fixed_port is not None else ["--port", "0"]
        deadline = time.monotonic() + self.startup_timeout
        log_start = os.path.getsize(self._log.name)
        self._port = None
        self.process = subprocess.Popen(
            [*command, str(self.model_dir), *port_args, *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        if self._fixed_port is not None:
            self._port = int(self._fixed_port)
        else:
            self._port = self._wait_for_port(log_start, deadline)
        path = "/v1/models/model" if self.wait_ready else "/"
        self.wait_until(path, max(deadline - time.monotonic(), 0.0))
        return self

    def _wait_for_port(self, log_start: int, deadline: float) -> int:
        """The port in the first "listening on" line this start logged."""
        while True:
            match = _LISTENING.search(self._log_since(log_start))
            if match is not None:
                return int(match[1])
            self._raise_if_exited()
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"server logged no 'listening on' line in {self.startup_timeout} s:\n"
                    + self.logs()
                )
            time.sleep(0.02)

    def _log_since(self, offset: int) -> str:
        with open(self._log.name, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def _raise_if_exited(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"server exited with code {self.process.returncode}:\n{self.logs()}")

    def wait_until(self, path: str, timeout: float) -> None:
        """Poll ``path`` until it answers 200; RuntimeError with the logs otherwise."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, headers=self.headers, verify=self.verify) as client:
            while True:
                self._raise_if_exited()
                try:
                    if client.get(self.url(path)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"server not answering 200 on {path} after {timeout} s:\n{self.logs()}")

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until the output matches the regular expression ``pattern``; the match.

        AssertionError with the logs if it has not appeared within ``timeout`` seconds.
        """
        expression = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (match := expression.search(self.logs())) is None:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{pattern!r} not logged in {timeout} s:\n{self.logs()}")
            time.sleep(0.02)
        return match

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, grace: float = 15.0) -> int | None:
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait(5)

    def logs(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._log.close()
        os.unlink(self._log.name)


def _option(args: list[str], name: str) -> str | None:
    """The value of ``name`` among command-line ``args`` (``--x v`` or ``--x=v``)."""
    value = None
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


class InProcessServer:
    """The app ``kingpost serve DIR`` builds, run in this process with no socket.

    For tests that need no real socket or signal: the app is built by the same
    ``kingpost.serve.build_app`` from the same command-line ``args`` (``--dev``,
    ``--environment``, ``--secrets-dir`` ...), its lifespan runs (the model
    loads; ``start()`` waits for it unless ``wait_ready=False``), and requests
    reach it through ``httpx.ASGITransport``. Each start imports the model's
    modules afresh, as a new process would; ``env`` is set for the server's
    lifetime and ``os.environ`` and ``sys.path`` are restored after it.

        with InProcessServer(Path("examples/echo")) as server:
            server.client.post("/predict", json={"x": 1})
            openai.OpenAI(base_url=server.url("/v1"), api_key="-", http_client=server.sdk_client)

        async with InProcessServer(Path("examples/echo")) as server:
            await server.async_client.post("/predict", json={"x": 1})

    Used with ``with``, the app runs on an event loop in a thread of its own and
    ``client`` is a plain ``httpx.Client``; with ``async with`` it runs on the
    caller's loop and ``async_client`` is an ``httpx.AsyncClient``. A response
    arrives whole once the app has sent it (ASGITransport buffers it), so what
    depends on timing or back-pressure belongs to ``ServerProcess``, as do
    signals, drain, workers, disconnects, ``--watch`` and the process's output.
    ``logs()`` holds the log lines of the server's lifetime, formatted as
    ``kingpost serve`` writes them (access lines included).
    """

    base_url = "http://kingpost.test"

    def __init__(
        self,
        model_dir: Path | str,
        *args: str,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        startup_timeout: float = 60.0,
    ) -> None:
        from kingpost.cli import build_parser, serve_options

        self.model_dir = Path(model_dir)
        parsed = build_parser().parse_args(["serve", str(self.model_dir), *args])
        self.options = serve_options(parsed)
        if self.options.watch or self.options.workers != 1:
            raise ValueError("--watch and --workers need a real process: use ServerProcess")
        self.env = env or {}
        self.wait_ready = wait_ready
        self.startup_timeout = startup_timeout
        self.exit_code: int | None = None  # what the process would have exited with
        self._log = io.StringIO()
        self._saved: _SavedProcessState | None = None
        self._app: Any = None
        self._lifespan: _Lifespan | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        self._async_client: httpx.AsyncClient | None = None
        self._sdk_client: Any = None
        self._async_sdk_client: Any = None

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def app(self) -> Any:
        """The ASGI app being served (a ``kingpost.server.app.ServerApp``)."""
        if self._app is None:
            raise RuntimeError("the app exists once start() has returned")
        return self._app

    @property
    def client(self) -> httpx.Client:
        """An ``httpx.Client`` on the app (``with``-started servers)."""
        if self._client is None:
            raise RuntimeError("client is there once start() (a with-block) has returned")
        return self._client

    @property
    def async_client(self) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` on the app (``async with``-started servers)."""
        if self._async_client is None:
            raise RuntimeError("async_client is there once astart() (async with) has returned")
        return self._async_client

    @property
    def sdk_client(self) -> Any:
        """A client on the app for the SDKs' ``http_client=`` (``with``-started servers).

        An ``httpx2.Client`` where the installed openai and anthropic SDKs are built
        on httpx2 (they refuse httpx's), an ``httpx.Client`` otherwise.
        """
        if self._sdk_client is None:
            raise RuntimeError("sdk_client is there once start() (a with-block) has returned")
        return self._sdk_client

    @property
    def async_sdk_client(self) -> Any:
        """The ``AsyncClient`` counterpart of ``sdk_client`` (``async with``-started servers)."""
        if self._async_sdk_client is None:
            raise RuntimeError("async_sdk_client is there once astart() has returned")
        return self._async_sdk_client

    def logs(self) -> str:
        return self._log.getvalue()

    # -- on a loop of its own ----------------------------------------------------

    def start(self) -> InProcessServer:
        self._loop = _new_event_loop()
        self._thread = threading.Thread(
            target=_run_forever, args=(self._loop,), name="kingpost-in-process", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._start(), self.startup_timeout + 10)
        except BaseException:
            self.stop()
            raise
        asgi = httpx.ASGITransport(app=self.app)
        self._client = httpx.Client(
            transport=_thread_transport(httpx, asgi, self._loop), base_url=self.base_url
        )
        sdk_http = _sdk_http()
        self._sdk_client = sdk_http.Client(
            transport=_thread_transport(sdk_http, asgi, self._loop), base_url=self.base_url
        )
        return self

    def stop(self) -> None:
        for client in (self._client, self._sdk_client):
            if client is not None:
                client.close()
        self._client = self._sdk_client = None
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._stop(), 30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            self._loop = self._thread = None

    def wait_until(self, path: str, timeout: float) -> None:
        """Poll ``path`` until it answers 200; RuntimeError with the logs otherwise."""
        deadline = time.monotonic() + timeout
        while self.client.get(path).status_code != 200:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"server not answering 200 on {path} after {timeout} s:\n{self.logs()}"
                )
            time.sleep(0.05)

    def _call(self, coroutine: Coroutine[Any, Any, None], timeout: float) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def __enter__(self) -> InProcessServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- on the caller's loop ----------------------------------------------------

    async def astart(self) -> InProcessServer:
        try:
            await self._start()
        except BaseException:
            await self.astop()
            raise
        self._async_client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=self.base_url
        )
        sdk_http = _sdk_http()
        self._async_sdk_client = sdk_http.AsyncClient(
            transport=sdk_http.ASGITransport(app=self.app), base_url=self.base_url
        )
        return self

    async def astop(self) -> None:
        for client in (self._async_client, self._async_sdk_client):
            if client is not None:
                await client.aclose()
        self._async_client = self._async_sdk_client = None
        await self._stop()

    async def __aenter__(self) -> InProcessServer:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    # -- both ----------------------------------------------------------------------

    async def _start(self) -> None:
        from kingpost.config import load_config
        from kingpost.model.loader import forget_modules
        from kingpost.serve import build_app, report_unused_config

        self._saved = _SavedProcessState.take(self._log, self.options.log_level)
        os.environ.update(self.env)
        model_dir = self.options.model_dir.resolve()
        forget_modules(model_dir)  # as a new process would, it reads the model's files
        config = load_config(model_dir)
        # build_app imports the model module; off the loop, as serve does it before one runs
        self._app = await asyncio.to_thread(
            build_app, self.options, None, self._record_exit, config
        )
        report_unused_config(config)
        if config.runtime.enable_debug_logs:
            logging.getLogger().setLevel(logging.DEBUG)
        self._lifespan = _Lifespan(self._app)
        await self._lifespan.startup()
        if self.wait_ready:
            failed = await asyncio.wait_for(self._app.wait_started(), self.startup_timeout)
            if failed is not None:
                raise RuntimeError(
                    f"the model failed to load (exit code {self.exit_code}):\n" + self.logs()
                )

    async def _stop(self) -> None:
        try:
            if self._lifespan is not None:
                await self._lifespan.shutdown()
        finally:
            self._lifespan = None
            if self._saved is not None:
                self._saved.restore()
                self._saved = None

    def _record_exit(self, code: int) -> None:
        self.exit_code = code


@dataclass
class _SavedProcessState:
    """What a server changes in the process (environment, import path, logging)."""

    environ: dict[str, str]
    path: list[str]
    root_level: int
    handler: logging.Handler
    access_log: AccessLog

    @classmethod
    def take(cls, stream: io.StringIO, level: str) -> _SavedProcessState:
        root = logging.getLogger()
        handler = logging.StreamHandler(stream)
        handler.addFilter(RequestIdFilter())
        handler.addFilter(_server_side)
        handler.setFormatter(TextFormatter())
        saved = cls(dict(os.environ), list(sys.path), root.level, handler, access_log())
        root.addHandler(handler)
        root.setLevel(level.upper())
        use_access_log(AccessLog())  # built after the level is set, so it writes
        return saved

    def restore(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.root_level)
        use_access_log(self.access_log)
        os.environ.clear()
        os.environ.update(self.environ)
        sys.path[:] = self.path


_CLIENT_LOGGERS = {"httpx", "httpcore", "openai", "anthropic"}


def _server_side(record: logging.LogRecord) -> bool:
    """Leave out what the test's own clients log: a server's output never has it."""
    return record.name.partition(".")[0] not in _CLIENT_LOGGERS


class _Lifespan:
    """Drives an ASGI app's lifespan: startup, then shutdown."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.create_task(self.app(scope, self._inbox.get, self._outbox.put))
        await self._exchange("lifespan.startup")

    async def shutdown(self) -> None:
        await self._exchange("lifespan.shutdown")
        assert self._task is not None
        await self._task

    async def _exchange(self, message_type: str) -> None:
        assert self._task is not None
        await self._inbox.put({"type": message_type})
        reply = asyncio.ensure_future(self._outbox.get())
        await asyncio.wait({reply, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():
            reply.cancel()
            self._task.result()  # the app's exception, if it raised
            raise RuntimeError(f"the app ended its lifespan on {message_type}")
        if reply.result()["type"] != message_type + ".complete":
            raise RuntimeError(f"{message_type} failed: {reply.result()}")


def _thread_transport(
    http: ModuleType, asgi: httpx.ASGITransport, loop: asyncio.AbstractEventLoop
) -> Any:
    """A sync transport of ``http`` (httpx, or httpx2 as the SDKs use) handing each
    request to ``asgi`` on another thread's loop."""

    class ThreadTransport(http.BaseTransport):  # type: ignore[name-defined,misc]
        def handle_request(self, request: Any) -> Any:
            chunks = list(request.stream)  # a chunked body arrives in its chunks
            forwarded = httpx.Request(
                request.method,
                str(request.url),
                headers=request.headers.raw,
                stream=_Chunks(chunks),
            )

            async def send() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
                response = await asgi.handle_async_request(forwarded)
                return response.status_code, response.headers.raw, await response.aread()

            timeout = request.extensions.get("timeout", {}).get("read")
            future = asyncio.run_coroutine_threadsafe(send(), loop)
            try:
                status, headers, content = future.result(timeout)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise http.ReadTimeout(f"no response in {timeout} s", request=request) from None
            return http.Response(status, headers=headers, stream=http.ByteStream(content))

    return ThreadTransport()


def _sdk_http() -> ModuleType:
    """The HTTP client package the installed openai and anthropic SDKs are built on."""
    try:
        import httpx2
    except ImportError:  # SDK releases before httpx2 take httpx clients
        return httpx
    return httpx2


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def _new_event_loop() -> asyncio.AbstractEventLoop:
    from kingpost.serve import new_event_loop

    return new_event_loop()


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
