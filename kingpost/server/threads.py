"""The threads that sync model code runs in.

A sync hook is called from the event loop and its result is needed back on
the event loop. ``HookThreads.call()`` does that hop with one queue put and one
``call_soon_threadsafe``: no ``concurrent.futures.Future`` with its condition
variable in between, and no second future chained to it. About three times
cheaper per call than ``ThreadPoolExecutor`` plus ``asyncio.wrap_future``.

The pool also is a plain ``concurrent.futures.Executor`` (``submit``) for the
rest of the server: loading the model, health checks, pulling sync generators.
Threads are started on demand up to ``max_threads`` and then kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any


class HookCall:
    """One call of a sync function in a pool thread, awaited through ``future``."""

    __slots__ = ("_args", "_context", "_finished", "_fn", "_loop", "future", "in_thread")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._fn = fn
        self._args = args
        self._context = contextvars.copy_context()
        self._loop = loop
        self._finished: list[Callable[[], None]] | None = None
        self.future: asyncio.Future[Any] = loop.create_future()
        self.in_thread = True  # until the function has returned or raised

    def when_finished(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the event loop once the function has returned, even if
        nobody awaits the result any more (the thread cannot be stopped)."""
        if not self.in_thread:
            callback()
        elif self._finished is None:
            self._finished = [callback]
        else:
            self._finished.append(callback)

    def run(self) -> None:
        """In the pool thread."""
        try:
            result = self._context.run(self._fn, *self._args)
        except BaseException as exc:
            self._hand_back(None, exc)
        else:
            self._hand_back(result, None)

    def _hand_back(self, result: Any, exc: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._settle, result, exc)

    def abandon(self) -> None:
        """The pool shut down before running this call: cancel it, still run the callbacks."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        self.in_thread = False
        self.future.cancel()
        for callback in self._finished or ():
            callback()

    def _settle(self, result: Any, exc: BaseException | None) -> None:
        self.in_thread = False
        future = self.future
        if not future.done():
            if exc is None:
                future.set_result(result)
            else:
                future.set_exception(exc)
        for callback in self._finished or ():
            callback()


class _Submitted:
    """A ``submit()`` job, reported through a ``concurrent.futures.Future``."""

    __slots__ = ("args", "fn", "future")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.future: Future[Any] = Future()

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args)
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class HookThreads(Executor):
    """A pool of up to ``max_threads`` threads for sync model code."""

    def __init__(self, max_threads: int, name: str = "kingpost-hook") -> None:
        self.max_threads = max_threads
        self.name = name
        self._jobs: queue.SimpleQueue[HookCall | _Submitted | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one permit per thread waiting for work
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut_down = False

    def call(self, fn: Callable[..., Any], *args: Any) -> HookCall:
        """Start ``fn(*args)`` in a thread, in a copy of the caller's context.

        Event-loop thread only; ``await call.future`` for the result.
        """
        if self._shut_down:
            raise RuntimeError("the hook threads are shut down")
        job = HookCall(fn, args, asyncio.get_running_loop())
        self._put(job)
        return job

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._shut_down:
            raise RuntimeError("the hook threads are shut down")
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        job = _Submitted(fn, args)
        self._put(job)
        return job.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the threads once they are idle; a hook still running is not interrupted."""
        self._shut_down = True
        if cancel_futures:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if isinstance(job, _Submitted):
                    job.future.cancel()
                elif isinstance(job, HookCall):
                    job.abandon()
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _put(self, job: HookCall | _Submitted) -> None:
        self._jobs.put(job)
        if not self._idle.acquire(blocking=False):
            self._start_thread()

    def _start_thread(self) -> None:
        with self._lock:
            if len(self._threads) >= self.max_threads:
                return  # the job waits for a busy thread to finish
            # Daemon threads: a hook that never returns must not keep the process alive.
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        get = self._jobs.get
        while True:
            job = get()
            if job is None:
                return
            job.run()
            del job  # drop the result before waiting for the next job
            self._idle.release()
