"""One webhook message: its JSON payload, its Standard Webhooks signature, and the HTTP POST.

Standard Webhooks (https://www.standardwebhooks.com/, "Signature scheme"): the headers
``webhook-id`` (the delivery's id, the same on every attempt), ``webhook-timestamp`` (integer
seconds since the epoch, of this attempt) and ``webhook-signature`` (``v1,`` and the base64
HMAC-SHA256, keyed with the client's secret, over ``id.timestamp.body``). A receiver checks the
signature over the exact bytes it received, and refuses a timestamp far from its clock, which
bounds replays.

The payload names the request by the PAR ``request_uri`` the client got back, and, when the
documents were signed, their labels and hashes: no attribute, no token, no signature (the RP
fetches those with its access token).

An attempt has a wall-clock deadline (``TIMEOUT``): ``requests``' own timeout bounds each socket
operation, so a receiver that drips its status line or headers a byte at a time would hold the
dispatcher for ever. A watchdog timer shuts the attempt's socket down at the deadline; the
attempt is then a ``timeout``. The deadline is well inside the claim's lease (``LEASE``), so no
other dispatcher posts the same delivery while the first is still at it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import math
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, Self

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from idp.webhooks.outbox import LEASE, Claimed
from idp.webhooks.records import WebhookEvent

__all__ = ["TIMEOUT", "HttpSender", "Message", "SendResult", "Sender", "payload", "sign"]

TIMEOUT = timedelta(seconds=5)
"""How long one attempt may take in all, from connecting to the response's headers (wall clock)."""
USER_AGENT = "MynaGateway-Webhooks/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """What goes on the wire: the body and the three Standard Webhooks headers."""

    url: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """How an attempt went: the HTTP status, or why there was none."""

    status: int | None
    error: str | None = None
    """``timeout``, ``connection`` or ``error`` (another failure of the request) when no status."""

    @property
    def delivered(self) -> bool:
        """A 2xx answer (Standard Webhooks: any 2xx is a success; a redirect is not followed)."""
        return self.status is not None and 200 <= self.status < 300  # noqa: PLR2004 - the 2xx class

    @property
    def reason(self) -> str:
        """For the log and ``last_error``: ``http 503``, ``timeout``, ``connection``, ``error``."""
        return f"http {self.status}" if self.status is not None else self.error or "error"


class Sender(Protocol):
    """The network, as the dispatcher needs it."""

    def send(self, message: Message) -> SendResult:
        """POST the message once; never raises for a network failure."""
        ...


def payload(claimed: Claimed) -> bytes:
    """The JSON body of a delivery: the same bytes on every attempt."""
    body: dict[str, object] = {
        "type": f"signing.{claimed.event.value}",
        "request_uri": claimed.request_uri,
        "client_id": claimed.client_id,
        "occurred_at": claimed.occurred_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if claimed.event is WebhookEvent.COMPLETED:
        body["documents"] = [{"label": entry["label"], "hash": entry["hash"]} for entry in claimed.documents]
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(*, key: bytes, message_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of ``body``, signed with ``key`` at ``timestamp``."""
    seconds = str(math.floor(timestamp.timestamp()))
    signed = message_id.encode() + b"." + seconds.encode() + b"." + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")
    return {"webhook-id": message_id, "webhook-timestamp": seconds, "webhook-signature": f"v1,{signature}"}


class HttpSender:
    """``Sender`` with ``requests``: a deadline per attempt, no redirects, the response body never read."""

    def __init__(self, *, timeout: timedelta = TIMEOUT) -> None:
        """``timeout``: the whole attempt's deadline; it must be shorter than the claim's ``LEASE``."""
        if not timedelta(0) < timeout < LEASE:
            raise ValueError(f"the webhook timeout must be positive and shorter than the claim's lease ({LEASE})")
        self._timeout = timeout.total_seconds()

    def __repr__(self) -> str:
        return f"HttpSender(timeout={self._timeout})"

    def send(self, message: Message) -> SendResult:
        """POST ``message``; the status, or ``timeout`` / ``connection`` / ``error``."""
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **message.headers}
        with _Deadline(self._timeout) as deadline, requests.Session() as session:
            session.mount("http://", _WatchedAdapter(max_retries=0))
            session.mount("https://", _WatchedAdapter(max_retries=0))
            try:
                # stream=True: only the status line and headers are read; the body, whatever its size, is not.
                with session.post(message.url, data=message.body, headers=headers, timeout=self._timeout,
                                  allow_redirects=False, stream=True) as response:
                    if deadline.passed:  # the headers were cut short at the deadline: no answer in time
                        return SendResult(status=None, error="timeout")
                    return SendResult(status=response.status_code)
            except requests.Timeout:
                return SendResult(status=None, error="timeout")
            except requests.ConnectionError:  # also what a socket shut at the deadline looks like
                return SendResult(status=None, error="timeout" if deadline.passed else "connection")
            except requests.RequestException:
                return SendResult(status=None, error="timeout" if deadline.passed else "error")


class _Deadline:
    """Shuts down the sockets the current thread opens (``_WatchedAdapter``) once ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.passed = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Self:
        _watching.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()
        _watching.deadline = None

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if not self.passed:
                return
        _shut(sock)  # opened after the deadline: no further

    def _expire(self) -> None:
        with self._lock:
            self.passed = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    """Wake up whatever blocks on ``sock`` (the read then sees the end of the stream)."""
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


_watching = threading.local()
"""The ``_Deadline`` of the attempt running on this thread, if any."""


def _watched(sock: socket.socket) -> socket.socket:
    deadline: _Deadline | None = getattr(_watching, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)
    return sock


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _watched(super()._new_conn())


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _watched(super()._new_conn())  # the TLS session runs over this socket


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: dict[str, type[HTTPConnectionPool]] = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections (direct or through an HTTP proxy) register their socket."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager
