"""When a dependency fails: which errors mean "PostgreSQL or Redis cannot be reached now", and the 503s.

An outage of the database or the ephemeral store is not a bug of the request: the request may be
retried once the server is back, so every API answers it with HTTP 503 and ``Retry-After``,
never a 500 and never a stack trace, each in its own family's shape (``docs/operations.md``):

- the browser's pages (``/authorize``, ``/login/<id>/continue|cancel``): an HTML page, ja/en
  (``idp.web.login.unavailable_page``);
- JSON endpoints of the OAuth family (``/par``, ``/token``, ``/userinfo``, the login page's
  ``/status``): ``{"error": "temporarily_unavailable"}``, the RFC 6749 §4.1.2.1 code for exactly
  this, in the §5.2 JSON shape;
- the device API and the other problem-details APIs: RFC 9457 ``service-unavailable``;
- the OCSP responder: an RFC 6960 §2.3 ``tryLater`` response.

``register_unavailable_handler`` attaches one renderer to a blueprint for every such error, so
that it wins over the blueprint's catch-all ``Exception`` handler (Flask looks for a handler of
each class of the error's MRO on the blueprint before it falls back to the app).

Connections recover on their own: a Redis connection that failed is dropped by redis-py and made
again by the next command, and a PostgreSQL connection that raised a disconnect error is
invalidated with its whole pool by SQLAlchemy (``pool_pre_ping`` is off), so the first request
after the outage connects afresh. No restart is needed.
"""

from __future__ import annotations

import enum
import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg
from flask import json, request
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.wrappers import Response

from idp.ops import metrics
from idp.store.ephemeral import EphemeralStoreUnavailable

if TYPE_CHECKING:
    from flask import Blueprint, Flask

__all__ = [
    "RETRY_AFTER_SECONDS",
    "UNAVAILABLE_ERRORS",
    "Dependency",
    "internal_error",
    "note_unavailable",
    "register_unavailable_handler",
    "retry_headers",
    "unavailable_dependency",
    "unavailable_json",
]

logger = logging.getLogger("idp.ops")

RETRY_AFTER_SECONDS = 5
"""What ``Retry-After`` says: long enough for a failover or a restart to be noticed, short enough
that a user retrying by hand does not wait for nothing."""

UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    EphemeralStoreUnavailable,  # Redis refused, reset, timed out, read-only, out of memory
    sa_exc.OperationalError,  # among them: refused, reset, the server shutting down, SQLite busy
    sa_exc.InterfaceError,  # among them: a connection the driver already knows is closed
    sa_exc.TimeoutError,  # no pooled connection came free in time: the database is too slow to answer
)
"""The classes an outage of a dependency is raised as; ``unavailable_dependency`` tells which
instances are one (a missing table is an OperationalError on SQLite too, and a bug)."""

_SQLITE_BUSY = ("database is locked", "database table is locked")


class Dependency(enum.StrEnum):
    """What failed; the ``dependency`` label of ``myna_dependency_unavailable_total``."""

    DATABASE = "database"
    EPHEMERAL_STORE = "ephemeral_store"


def unavailable_dependency(error: BaseException) -> Dependency | None:
    """The dependency ``error`` says is unavailable, or None when it says something else (a bug)."""
    if isinstance(error, EphemeralStoreUnavailable):
        return Dependency.EPHEMERAL_STORE
    if isinstance(error, sa_exc.TimeoutError) or _database_outage(error):
        return Dependency.DATABASE
    return None


def _database_outage(error: BaseException) -> bool:
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    if error.connection_invalidated:  # SQLAlchemy recognised a disconnect and invalidated the pool
        return True
    driver_error = error.orig
    # psycopg's OperationalError: cannot connect, connection lost or closed, admin shutdown, cannot connect now.
    if isinstance(driver_error, psycopg.OperationalError):
        return True
    return isinstance(driver_error, sqlite3.OperationalError) and str(driver_error).startswith(_SQLITE_BUSY)


def retry_headers() -> dict[str, str]:
    """The headers of every 503 for an unavailable dependency (RFC 9110 §10.2.3 Retry-After)."""
    return {"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"}


def note_unavailable(dependency: Dependency, error: BaseException) -> None:
    """Log ``dependency.unavailable`` (no stack trace: the error's type says enough) and count it."""
    logger.warning(
        "dependency.unavailable dependency=%s endpoint=%s error=%s",
        dependency.value, request.endpoint or "unmatched", type(error).__name__,
    )
    metrics.dependency_unavailable(dependency.value)


def unavailable_json(body: dict[str, str] | None = None) -> Response:
    """503 with ``{"error": "temporarily_unavailable"}`` (or ``body``), for the OAuth family's JSON endpoints."""
    document = body or {
        "error": "temporarily_unavailable",
        "error_description": "the service is temporarily unavailable; retry after Retry-After seconds",
    }
    response = Response(json.dumps(document), status=503, mimetype="application/json")
    response.headers.update(retry_headers())
    return response


def register_unavailable_handler(
    target: Flask | Blueprint,
    render: Callable[[Dependency], Response],
    *,
    otherwise: Callable[[Exception], Response | HTTPException] | None = None,
) -> None:
    """Answer an outage raised in ``target``'s views with ``render(dependency)``, 503 and ``Retry-After``.

    An error of the same classes that is no outage (``unavailable_dependency`` is None: a missing
    table, a bad parameter) goes to ``otherwise``, the family's answer to the unexpected
    (by default ``internal_error``: Flask's own 500, logged).
    """
    fallback = otherwise or internal_error

    def answer(error: Exception) -> Response | HTTPException:
        dependency = unavailable_dependency(error)
        if dependency is None:
            return fallback(error)
        note_unavailable(dependency, error)
        response = render(dependency)
        response.status_code = 503
        response.headers.update(retry_headers())
        return response

    for kind in UNAVAILABLE_ERRORS:
        target.register_error_handler(kind, answer)


def internal_error(error: Exception) -> HTTPException:
    """Flask's own 500 for an unexpected error, logged with its traceback (for the app-wide handler)."""
    logger.error("unexpected error answering %s %s", request.method, request.path, exc_info=error)
    return InternalServerError(original_exception=error)
