"""Request ids: one per HTTP request, taken from ``X-Request-Id`` when well formed, echoed in the response.

A reverse proxy or an RP may send its own id so that its logs and ours join; anything else gets a
fresh random id. The id is put back into the WSGI environ, so every handler that reads the
header (the device API's events, the access log) sees the same id, and into a context variable,
so every log record of the request carries it (``idp.ops.logging``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

__all__ = ["ENVIRON_KEY", "HEADER", "RequestIdMiddleware", "current_request_id", "well_formed"]

HEADER = "X-Request-Id"
ENVIRON_KEY = "HTTP_X_REQUEST_ID"
_WELL_FORMED = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""The ids we accept: short, and safe to put in a log line or a header as they are."""

_current: ContextVar[str | None] = ContextVar("request_id", default=None)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def well_formed(candidate: str) -> bool:
    """Whether ``candidate`` may be used as a request id as it is."""
    return _WELL_FORMED.fullmatch(candidate) is not None


def current_request_id() -> str | None:
    """The id of the request being served in this context, if any."""
    return _current.get()


class RequestIdMiddleware:
    """WSGI middleware giving each request its id (kept cheap: one header read, one match)."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app

    def __repr__(self) -> str:
        return f"RequestIdMiddleware({self._app!r})"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve the request with its id set; the response carries it in ``X-Request-Id``."""
        request_id = environ.get(ENVIRON_KEY, "")
        if not well_formed(request_id):
            request_id = secrets.token_hex(8)
            environ[ENVIRON_KEY] = request_id

        def start_with_id(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append((HEADER, request_id))
            return start_response(status, headers, exc_info)

        token = _current.set(request_id)
        try:
            return self._app(environ, start_with_id)
        finally:
            _current.reset(token)
