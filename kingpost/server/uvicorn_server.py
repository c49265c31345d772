"""uvicorn's ``Server`` for a process that a stop signal ends cleanly.

After a graceful shutdown uvicorn sends itself the stop signal it caught, so the
process dies of SIGTERM (exit -15) and code after ``serve()`` (closing a state
store, reporting an exit code) never runs. For a server a SIGTERM is the normal
way to stop: the shutdown it asked for has happened, so the signal is dropped.

    server = CleanStopServer(uvicorn.Config(app))
    asyncio.run(server.serve())      # returns after SIGTERM; the process exits 0
"""

from __future__ import annotations

import socket

import uvicorn


class CleanStopServer(uvicorn.Server):
    async def _serve(self, sockets: list[socket.socket] | None = None) -> None:
        await super()._serve(sockets)
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()
