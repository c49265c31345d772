"""One run of a custom server's command: its own process group, its output, its end.

The command runs through ``/bin/sh`` in a new session, so the shell and
everything it starts share one process group that can be signalled as a whole,
and the shell kills that group if Kingpost is killed: no process the command
started outlives Kingpost. Each line the command prints goes to Kingpost's log
with a ``[server PID]`` prefix, and the last lines are kept for error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger("kingpost.proxy.server")

KEPT_LINES = 40
_READ_SIZE = 65536
_PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

# The shell runs the command in the background and waits for it, so that it
# stays free to act on SIGHUP: it gets one if Kingpost dies without a chance to
# stop it (SIGKILL, see _hang_up_with_parent), and then kills its whole group.
# The braces keep any list or pipeline of the command together; the newline
# ends a trailing comment.
_GUARDED = "trap 'kill -KILL 0' HUP\n{{ {command}\n}} &\nwait $!\n"


def _hang_up_with_parent() -> None:
    """In the forked shell before exec: get SIGHUP when Kingpost's process ends."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGHUP)


def group_is_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count).

    Orphans whose new parent never reaps them stay zombies, and a zombie still
    answers signals, so on Linux the group is looked up in /proc.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            return True
    return False


class ChildProcess:
    """A started command. Create with ``await ChildProcess.start(...)``."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.recent: deque[str] = deque(maxlen=KEPT_LINES)
        self._readers = [
            asyncio.create_task(self._pipe_to_log(stream))
            for stream in (process.stdout, process.stderr)
            if stream is not None
        ]
        self._exit = asyncio.ensure_future(process.wait())

    @classmethod
    async def start(cls, command: str, env: Mapping[str, str], cwd: Path) -> ChildProcess:
        process = await asyncio.create_subprocess_shell(
            _GUARDED.format(command=command),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_hang_up_with_parent,
        )
        child = cls(process)
        logger.info("started the custom server (pid %d): %s", child.pid, command)
        return child

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def exited(self) -> asyncio.Future[int]:
        """Resolves with the exit code when the command's shell exits."""
        return self._exit

    def last_lines(self, count: int = 20) -> str:
        return "\n".join(list(self.recent)[-count:])

    async def stop(self, grace: float) -> int:
        """SIGTERM the whole group; SIGKILL what is left after ``grace`` seconds.

        The grace period is for every process of the group, not just the shell:
        a server started by the shell still gets its time to shut down when the
        shell itself exits at once.
        """
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.returncode is None or group_is_alive(self.pid):
            if time.monotonic() >= deadline:
                logger.warning(
                    "the custom server (pid %d) did not exit %g s after SIGTERM: killing it",
                    self.pid,
                    grace,
                )
                break
            await asyncio.sleep(0.05)
        await self.reap()
        return self._exit.result()

    async def reap(self) -> None:
        """Kill whatever is left of the group and wait for the shell and its output to end."""
        self._signal_group(signal.SIGKILL)
        if self.returncode is None:  # the shell left the group (setsid): kill it directly
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await asyncio.shield(self._exit)
        # A grandchild that escaped the group may hold the pipes open: do not wait forever.
        _, pending = await asyncio.wait(self._readers, timeout=2.0)
        for reader in pending:
            reader.cancel()

    def _signal_group(self, sig: signal.Signals) -> None:
        # The group id is the shell's pid: it stays reserved while any member lives.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def _pipe_to_log(self, stream: asyncio.StreamReader) -> None:
        pending = b""
        while True:
            data = await stream.read(_READ_SIZE)
            if not data:
                break
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                self._log_line(line)
            if len(pending) > _READ_SIZE:  # a very long line without a newline
                self._log_line(pending)
                pending = b""
        if pending:
            self._log_line(pending)

    def _log_line(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        self.recent.append(line)
        logger.info("[server %d] %s", self.pid, line)
