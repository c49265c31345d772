"""What travels between the front process and a replica through a Serve handle.

A request goes as one ``RequestHead`` (the ASGI scope's fields and the whole
body). The reply comes back as a stream of batches, each a list of ASGI send
messages: a small reply (start + body) is one batch, a stream is one batch per
chunk the model produced while the previous batch was in flight. A websocket
goes the same way (``kind="websocket"``, no body); its client's frames reach the
replica through the front's ``WebSocketInbox`` (``sockets.py``).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

Message = MutableMapping[str, Any]
Batch = list[Message]


@dataclass(frozen=True, slots=True)
class RequestHead:
    """One HTTP request as the replica's ASGI app will see it."""

    method: str
    path: str
    raw_path: bytes
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    http_version: str = "1.1"
    scheme: str = "http"
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    root_path: str = ""
    kind: str = "http"  # or "websocket"
    subprotocols: tuple[str, ...] = ()

    @classmethod
    def from_scope(cls, scope: dict[str, Any], body: bytes) -> RequestHead:
        client = scope.get("client")
        server = scope.get("server")
        return cls(
            method=scope.get("method", "GET"),
            path=scope["path"],
            raw_path=scope.get("raw_path") or scope["path"].encode(),
            query_string=scope.get("query_string", b""),
            headers=list(scope.get("headers", ())),
            body=body,
            http_version=scope.get("http_version", "1.1"),
            scheme=scope.get("scheme", "http"),
            client=tuple(client) if client else None,  # type: ignore[arg-type]
            server=tuple(server) if server else None,  # type: ignore[arg-type]
            root_path=scope.get("root_path", ""),
            kind=scope["type"],
            subprotocols=tuple(scope.get("subprotocols", ())),
        )

    def scope(self) -> dict[str, Any]:
        """The ASGI scope again, on the replica: an HTTP request's, or a websocket's."""
        scope: dict[str, Any] = {
            "type": self.kind,
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": self.http_version,
            "scheme": self.scheme,
            "path": self.path,
            "raw_path": self.raw_path,
            "query_string": self.query_string,
            "root_path": self.root_path,
            "headers": self.headers,
            "client": self.client,
            "server": self.server,
            "state": {},
        }
        if self.kind == "websocket":
            scope["subprotocols"] = list(self.subprotocols)
        else:
            scope["method"] = self.method
        return scope
