"""The audit log's table: one row per audited event, chained by SHA-256, and the chain's head.

Rows are only ever inserted (``idp.audit.log``). ``seq`` is consecutive from 1, so a deleted row
leaves a gap; ``prev_hash`` is the previous row's ``hash`` (64 zeros for the first), so a row
moved or rewritten breaks the chain; ``audit_head`` repeats the newest row's number and hash in
the same transaction, so a row removed from the end (or one added after it) is seen too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.store.database import Base

__all__ = ["AuditHead", "AuditRecord"]


class AuditRecord(Base):
    """One audited event: who did what to which internal ids, and the chain's hashes."""

    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    """Consecutive from 1; two appenders can never both write the same number (primary key)."""
    time: Mapped[datetime]
    event: Mapped[str] = mapped_column(String(48))
    actor: Mapped[str] = mapped_column(String(80))
    """``operator``, ``portal``, ``phone:<device id>``, ``client:<client id>``, ``person:<person id>``."""
    subject: Mapped[list[str]] = mapped_column(JSON)
    """Internal ids only (``person:…``, ``device:…``, ``client:…``, ``certificate:<ca>/<serial>``)."""
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Whitelisted keys per event (``idp.audit.events``), never an attribute, token, PIN or key."""
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    """SHA-256, lower-case hex, of the canonical JSON of the fields above (``idp.audit.chain``)."""

    __table_args__ = (CheckConstraint("seq >= 1", name="seq_positive"),)


class AuditHead(Base):
    """The newest record's number and hash, written with it: a truncated log no longer reaches it."""

    __tablename__ = "audit_head"

    log: Mapped[str] = mapped_column(String(16), primary_key=True)
    """Always ``audit``: the portal keeps one chain."""
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
