"""gunicorn's access log without secrets: method, path, status, size, duration and request id.

gunicorn's default line holds the request line with its query string and the Referer, which on
this portal carry authorization codes, ``state``, ``nonce``, login hints and the login page's
address. These loggers write neither, nor any header: an ``Authorization`` header, a cookie or a
query string cannot reach the log. They also skip gunicorn's per-request atom table, which
costs more than the line itself. ``config/gunicorn.conf.py`` picks one as ``logger_class``.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger

from idp.ops.request_id import ENVIRON_KEY

__all__ = ["JsonAccessLogger", "TextAccessLogger", "access_fields"]


def access_fields(resp: Any, environ: dict[str, Any], request_time: timedelta) -> dict[str, Any]:
    """What one access line says. The path is ``PATH_INFO``: without the query string."""
    return {
        "remote": environ.get("REMOTE_ADDR"),
        "method": environ.get("REQUEST_METHOD"),
        "path": environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
        "status": resp.status_code,
        "bytes": getattr(resp, "sent", None),
        "duration_ms": round(request_time.total_seconds() * 1000, 3),
        "request_id": environ.get(ENVIRON_KEY),
    }


class JsonAccessLogger(Logger):  # type: ignore[misc] # gunicorn is untyped
    """Access lines as JSON objects, in the shape of ``idp.ops.logging.JsonFormatter``'s records."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:  # noqa: ARG002 - gunicorn's signature
        """Write one access line."""
        if not self.access_log_enabled:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        line = {"time": stamp, "level": "info", "logger": "gunicorn.access", "event": "http.request",
                **access_fields(resp, environ, request_time)}
        self.access_log.info(json.dumps(line, ensure_ascii=False))


class TextAccessLogger(Logger):  # type: ignore[misc] # gunicorn is untyped
    """Access lines as plain text, the same fields as ``JsonAccessLogger``."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:  # noqa: ARG002 - gunicorn's signature
        """Write one access line."""
        if not self.access_log_enabled:
            return
        fields = access_fields(resp, environ, request_time)
        self.access_log.info(
            '%s "%s %s" %s %s %.3fms request_id=%s', fields["remote"], fields["method"], fields["path"],
            fields["status"], fields["bytes"], fields["duration_ms"], fields["request_id"],
        )
