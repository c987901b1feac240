"""Durable records of J-LIS linking data: every link received, and how far the feed was read.

A link names two card certificates, each by its issuer's key identifier and serial (decimal),
never by name: ``same_person`` (first = the user-authentication certificate, second = the
signature certificate) or ``successor`` (first = the old certificate, second = the new one).
The cursor is the sequence number of the last link stored; the next page must start there.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.store.database import Base

__all__ = ["JlisLink", "JlisLinkingCursor"]


class JlisLink(Base):
    """One link of the J-LIS feed, as verified and stored by ``idp pki sync``."""

    __tablename__ = "jlis_links"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    """J-LIS's sequence number: consecutive from 1, so a gap or a reordering is visible."""
    kind: Mapped[str] = mapped_column(String(16))
    first_kind: Mapped[str] = mapped_column(String(8))
    first_issuer_key_id: Mapped[bytes] = mapped_column(LargeBinary)
    first_serial: Mapped[str] = mapped_column(String(48))
    second_kind: Mapped[str] = mapped_column(String(8))
    second_issuer_key_id: Mapped[bytes] = mapped_column(LargeBinary)
    second_serial: Mapped[str] = mapped_column(String(48))
    reason: Mapped[str | None] = mapped_column(String(32))
    """The old certificate's revocation reason, for a successor link."""
    published_at: Mapped[datetime]
    received_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint("kind IN ('same_person', 'successor')", name="kind"),
        Index("ix_jlis_links_first", "first_issuer_key_id", "first_serial"),
        Index("ix_jlis_links_second", "second_issuer_key_id", "second_serial"),
    )


class JlisLinkingCursor(Base):
    """How far the portal has read the J-LIS linking-data feed."""

    __tablename__ = "jlis_linking_cursor"

    feed: Mapped[str] = mapped_column(String(16), primary_key=True)
    """Always ``jlis``: the portal reads one J-LIS feed."""
    position: Mapped[int] = mapped_column(BigInteger)
    """The sequence number of the last link stored."""
    updated_at: Mapped[datetime]
