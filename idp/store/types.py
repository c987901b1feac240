"""Column types that read back the same from SQLite and PostgreSQL.

SQLite has no time zone type: a ``DateTime(timezone=True)`` column comes back naive there and
aware on PostgreSQL, so a record's ``not_after`` would compare with ``clock.now()`` on one
database and raise ``TypeError`` on the other. ``UtcDateTime`` stores UTC and always returns an
aware UTC datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

__all__ = ["UtcDateTime"]


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC; naive datetimes are refused on the way in.

    In migrations it is plain ``sa.DateTime(timezone=True)`` (``env.py`` renders it so), so a
    revision never imports application code.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002 - the signature is SQLAlchemy's
        """Convert an aware datetime to UTC; raise ValueError for a naive one, whose zone is unknown."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a naive datetime has no time zone: pass an aware datetime (clock.now())")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002 - the signature is SQLAlchemy's
        """Attach UTC to what SQLite returns naive; convert what PostgreSQL returns aware."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
