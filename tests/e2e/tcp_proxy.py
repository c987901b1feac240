"""A TCP proxy for tests that cut the portal off from PostgreSQL or Redis and then restore it.

The portal is pointed at the proxy's port instead of the server's (``proxied_url``). ``cut()``
resets every connection passing through (RST, as a crashed server or a broken network does)
and closes the listening socket, so that new connections are refused; ``restore()`` listens
again on the same port. The machine's own servers are never touched. Threads only: a thread
accepts, and two threads pump each connection, one per direction.

Shared by ``tests/e2e/test_*outage*.py``. No test functions here.
"""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import suppress
from typing import Self
from urllib.parse import urlsplit, urlunsplit

__all__ = ["TcpProxy", "proxied_url"]

_CHUNK = 65536


def proxied_url(url: str, port: int) -> str:
    """``url`` (a database or Redis URL) with its host and port replaced by 127.0.0.1:``port``."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream`` until cut; use as a context manager."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._accepter: threading.Thread | None = None
        self.port = 0
        self.accepted = 0
        """Connections accepted since the proxy started: a test can see that a client reconnected."""

    @classmethod
    def to_url(cls, url: str) -> TcpProxy:
        """A proxy to the host and port of ``url``."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 0)

    def __enter__(self) -> Self:
        self._listen()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cut()

    @property
    def upstream(self) -> tuple[str, int]:
        """Where the proxy forwards to."""
        return self._upstream

    @property
    def is_cut(self) -> bool:
        """Whether the proxy refuses connections now."""
        return self._listener is None

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
        if listener is not None:
            listener.close()
        for connection in connections:
            _reset(connection)
        if self._accepter is not None:
            self._accepter.join(timeout=5)
            self._accepter = None

    def restore(self, upstream: tuple[str, int] | None = None) -> None:
        """Listen again on the same port and forward new connections (to ``upstream`` when given:
        another server, e.g. one that restarted empty)."""
        if upstream is not None:
            self._upstream = upstream
        if self._listener is None:
            self._listen()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        self._accepter = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accepter.start()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by cut()
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    _reset(client)
                    _reset(upstream)
                    return
                self._connections.update((client, upstream))
                self.accepted += 1
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._connections.discard(source)
            self._connections.discard(target)
        _reset(source)
        _reset(target)


def _reset(connection: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer's next read or write fails at once, as after a crash."""
    with suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with suppress(OSError):
        connection.shutdown(socket.SHUT_RD)  # wakes the thread blocked reading it; sends nothing
    with suppress(OSError):
        connection.close()
