"""The audit log service: append a record to the chain, verify the chain, export it.

Appending is serialised so that the chain never forks, however many workers and hosts write:
on PostgreSQL the appending transaction takes a transaction-scoped advisory lock (one fixed key)
before it reads the last record, and holds it until it commits; on SQLite the write transaction
itself (``BEGIN IMMEDIATE``, ``idp.store.database``) already admits one writer at a time.

``append_in`` writes into the caller's transaction, so a change and its audit record commit or
roll back together. Call it as the transaction's last statement: the lock is held until commit,
and every audited transaction of the portal waits for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from idp.audit.chain import GENESIS_HASH, AuditEntry, ChainReport, Head, check_chain, record_hash
from idp.audit.events import AuditEvent, InvalidAuditRecord, check_actor, check_details, check_subject
from idp.audit.records import AuditHead, AuditRecord

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

    from idp.clock import Clock

__all__ = ["APPEND_LOCK_ID", "AuditLog", "append_in"]

APPEND_LOCK_ID = 0x6D796E61_61756474  # "mynaaudt": the one advisory lock every appender takes
_LOG = "audit"
_BATCH = 1000


def append_in(
    connection: Session | Connection,
    event: AuditEvent | str,
    *,
    at: datetime,
    actor: str,
    subject: str | Sequence[str],
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Append one record inside the caller's open transaction; returns it.

    ``actor`` is ``operator``, ``portal``, ``phone:<device id>``, ``client:<client id>`` or
    ``person:<person id>``; ``subject`` one or more internal ids; ``details`` only the keys
    ``idp.audit.events.ALLOWED_DETAILS`` lists for the event. Raises InvalidAuditRecord before
    anything is written. A pending ORM change is flushed first, so that no row lock is taken
    while the append lock is held.
    """
    checked_event = _check_event(event)
    fields: dict[str, Any] = {
        "time": at,
        "event": checked_event.value,
        "actor": check_actor(actor),
        "subject": check_subject(subject),
        "details": check_details(checked_event, details),
    }
    if isinstance(connection, Session):
        connection.flush()
    _take_append_lock(connection)
    last = connection.execute(
        select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1),
    ).first()
    previous = Head(seq=0, hash=GENESIS_HASH) if last is None else Head(seq=last.seq, hash=last.hash)
    seq = previous.seq + 1
    entry = AuditEntry(
        seq=seq, prev_hash=previous.hash, hash=record_hash(seq=seq, prev_hash=previous.hash, **fields), **fields,
    )
    connection.execute(_insert(entry))
    _move_head(connection, entry)
    return entry


class AuditLog:
    """The audit log of one portal: append (own transaction or the caller's), verify, export."""

    def __init__(self, sessions: sessionmaker[Session], *, clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    def __repr__(self) -> str:
        return "AuditLog()"

    def append(
        self,
        event: AuditEvent | str,
        *,
        actor: str,
        subject: str | Sequence[str],
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one record in a transaction of its own, timed by the log's clock.

        For an event that changes nothing else in the database (a login, a signature). Raises
        InvalidAuditRecord.
        """
        with self._sessions.begin() as session:
            return append_in(session, event, at=self._clock.now(), actor=actor, subject=subject, details=details)

    def append_in(
        self,
        connection: Session | Connection,
        event: AuditEvent | str,
        *,
        actor: str,
        subject: str | Sequence[str],
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """``append_in`` of this module, timed by the log's clock."""
        return append_in(connection, event, at=self._clock.now(), actor=actor, subject=subject, details=details)

    def verify(self) -> ChainReport:
        """Check the whole chain from record 1 to the head (``idp.audit.chain.check_chain``).

        Reads in one transaction, so a record appended meanwhile is not half seen. A log with
        records but no head reports record 1 as written after the head.
        """
        with self._sessions.begin() as session:
            head_row = session.get(AuditHead, _LOG)
            head = Head(seq=0, hash=GENESIS_HASH) if head_row is None else Head(seq=head_row.seq, hash=head_row.hash)
            return check_chain(_entries(session, after=0), head=head)

    def export(self, *, after: int = 0) -> Iterator[AuditEntry]:
        """Every record numbered above ``after``, in order, read in batches in one transaction."""
        with self._sessions.begin() as session:
            yield from _entries(session, after=after)


def _check_event(event: AuditEvent | str) -> AuditEvent:
    try:
        return AuditEvent(event)
    except ValueError:
        raise InvalidAuditRecord("not an audit event (idp.audit.events.AuditEvent)") from None


def _take_append_lock(connection: Session | Connection) -> None:
    """Serialise appenders on PostgreSQL; SQLite's write transaction already does."""
    bind = connection.connection() if isinstance(connection, Session) else connection
    if bind.dialect.name != "postgresql":
        return
    if bind.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        # A transaction-scoped lock would be released at once: the chain could fork.
        raise InvalidAuditRecord("append_in needs a transaction; this connection is in autocommit")
    bind.exec_driver_sql(f"SELECT pg_advisory_xact_lock({APPEND_LOCK_ID})")


def _insert(entry: AuditEntry) -> Any:
    return insert(AuditRecord).values(
        seq=entry.seq, time=entry.time, event=entry.event, actor=entry.actor, subject=entry.subject,
        details=entry.details, prev_hash=entry.prev_hash, hash=entry.hash,
    )


def _move_head(connection: Session | Connection, entry: AuditEntry) -> None:
    moved = cast("CursorResult[Any]", connection.execute(
        update(AuditHead).where(AuditHead.log == _LOG).values(seq=entry.seq, hash=entry.hash),
    ))
    if moved.rowcount == 0:
        connection.execute(insert(AuditHead).values(log=_LOG, seq=entry.seq, hash=entry.hash))


def _entries(session: Session, *, after: int) -> Iterator[AuditEntry]:
    """The records above ``after`` in order, fetched ``_BATCH`` at a time (keyset pagination)."""
    while True:
        rows = session.scalars(
            select(AuditRecord).where(AuditRecord.seq > after).order_by(AuditRecord.seq).limit(_BATCH),
        ).all()
        for row in rows:
            yield AuditEntry(
                seq=row.seq, time=row.time, event=row.event, actor=row.actor, subject=list(row.subject),
                details=dict(row.details), prev_hash=row.prev_hash, hash=row.hash,
            )
        if len(rows) < _BATCH:
            return
        after = rows[-1].seq
        session.expunge_all()
