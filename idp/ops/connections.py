"""Pooled PostgreSQL connections that died during an outage are dropped at checkout, without a round trip.

``pool_pre_ping`` is off (``idp.store.database.make_engine``): a ``SELECT 1`` on every checkout
would cost a round trip on nearly every request. Without it, a connection that a PostgreSQL
restart, a failover or a broken network closed stays in the pool until it is used, and that use
fails: once per worker after every outage, a request answered 503, and at ``/token`` an
authorization code spent for nothing.

A closed connection can be told from a live one without asking the server: an idle connection
has nothing to read, so when its socket is readable the server has closed it (FIN, RST, or the
FATAL message PostgreSQL sends as it shuts down). ``drop_closed_connections`` checks that with a
``poll`` of the socket (a system call, about a microsecond) when the pool hands a connection out,
and raises ``DisconnectionError``, on which SQLAlchemy discards the connection and checks out
another (SQLAlchemy's "custom / legacy pessimistic ping" pattern, with the ping made local).
A connection cut silently (no packet arrives) still fails on first use, as before.
"""

from __future__ import annotations

import select
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError

__all__ = ["drop_closed_connections", "peer_closed"]


def peer_closed(fileno: int) -> bool:
    """Whether the idle connection on ``fileno`` has anything to read, i.e. its peer has closed it."""
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _check_out(dbapi_connection: Any, _record: object, _proxy: object) -> None:
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:
        return  # SQLite: a file, not a socket
    try:
        descriptor = fileno()
    except Exception as exc:  # psycopg raises once it knows the connection is closed
        raise DisconnectionError("the pooled connection is closed") from exc
    if peer_closed(descriptor):
        raise DisconnectionError("the server closed the pooled connection")


def drop_closed_connections(engine: Engine) -> None:
    """Check each connection ``engine``'s pool hands out; one the server closed is replaced (PostgreSQL only)."""
    if engine.dialect.name == "postgresql":
        event.listen(engine, "checkout", _check_out)
