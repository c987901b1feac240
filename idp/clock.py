"""The one place the portal reads the wall clock.

Ceremony steps take ``now`` as an argument; services take a ``Clock``, so tests pass a fixed
time (as pyhanko-certvalidator's ``ValidationContext(moment=...)`` does) instead of patching.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FixedClock", "SystemClock"]


class Clock(Protocol):
    """Tells the current time, always timezone-aware UTC."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)


@dataclass
class FixedClock:
    """A clock that stands still until moved; for tests and offline tools."""

    current: datetime

    def now(self) -> datetime:
        """The time this clock was set to."""
        return self.current

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward."""
        self.current += delta
