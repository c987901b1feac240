"""The hash chain of the audit log: the canonical encoding of a record and the checks of a chain.

A record's ``hash`` is the SHA-256, as 64 lower-case hex digits, of the UTF-8 bytes of this JSON
object, written with sorted keys, no whitespace (separators ``,`` and ``:``) and ``\\uXXXX``
escapes for anything outside ASCII (Python's ``json.dumps(..., sort_keys=True,
separators=(",", ":"), ensure_ascii=True)``; for our values the same bytes as RFC 8785 JCS)::

    {"actor":…,"details":{…},"event":…,"prev_hash":…,"seq":…,"subject":[…],"time":"2025-04-01T09:00:00.000000Z"}

``time`` is UTC with six fractional digits and ``Z``; ``prev_hash`` is the previous record's
``hash``, or 64 zeros for record 1. Details hold no floats (``idp.audit.events``), so every
number has one spelling. An exported line (``AuditEntry.to_json``) carries the same fields plus
``hash``, so anyone can re-check an export with ``check_chain`` and nothing else.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "BrokenLink",
    "ChainReport",
    "Head",
    "Reason",
    "canonical_bytes",
    "check_chain",
    "format_time",
    "record_hash",
]

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of record 1."""
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_time(moment: datetime) -> str:
    """A record's time as it is hashed and exported: UTC, microseconds, ``Z``."""
    if moment.tzinfo is None:
        raise ValueError("an audit record's time must be timezone-aware")
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """The inverse of ``format_time``."""
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One record of the chain, as stored and as exported."""

    seq: int
    time: datetime
    event: str
    actor: str
    subject: list[str]
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        """The record as one JSON line of ``idp audit export`` writes it."""
        return {
            "seq": self.seq, "time": format_time(self.time), "event": self.event, "actor": self.actor,
            "subject": list(self.subject), "details": dict(self.details), "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_json(cls, line: dict[str, Any]) -> AuditEntry:
        """Read back what ``to_json`` wrote; raises KeyError, TypeError or ValueError for anything else."""
        return cls(
            seq=int(line["seq"]), time=parse_time(line["time"]), event=str(line["event"]),
            actor=str(line["actor"]), subject=list(line["subject"]), details=dict(line["details"]),
            prev_hash=str(line["prev_hash"]), hash=str(line["hash"]),
        )


def canonical_bytes(
    *, seq: int, time: datetime, event: str, actor: str, subject: list[str], details: dict[str, Any], prev_hash: str,
) -> bytes:
    """The bytes a record's hash is taken over (see the module's notes)."""
    document = {
        "seq": seq, "time": format_time(time), "event": event, "actor": actor,
        "subject": subject, "details": details, "prev_hash": prev_hash,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def record_hash(
    *, seq: int, time: datetime, event: str, actor: str, subject: list[str], details: dict[str, Any], prev_hash: str,
) -> str:
    """SHA-256 of ``canonical_bytes``, 64 lower-case hex digits."""
    return hashlib.sha256(canonical_bytes(
        seq=seq, time=time, event=event, actor=actor, subject=subject, details=details, prev_hash=prev_hash,
    )).hexdigest()


class Reason(enum.StrEnum):
    """Why a link of the chain is broken."""

    SEQUENCE_GAP = "sequence_gap"
    """A record is missing (deleted), here or at the end of the log."""
    PREV_HASH_MISMATCH = "prev_hash_mismatch"
    """The record does not name the previous record's hash: reordered, replaced, or a rewritten predecessor."""
    HASH_MISMATCH = "hash_mismatch"
    """The record's fields do not hash to its stored hash: modified in place."""
    AFTER_HEAD = "after_head"
    """A record follows the newest one the log wrote: inserted by something else."""
    HEAD_MISMATCH = "head_mismatch"
    """The head names another hash than the newest record's, or is missing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokenLink:
    """The first broken link: the record's number, the reason, and a sentence for the operator."""

    seq: int
    reason: Reason
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Head:
    """The newest record as the log remembers it (``audit_head``)."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainReport:
    """The outcome of ``check_chain``: how many records were intact, and the first broken link."""

    count: int
    """Records checked and found intact before the first broken link (all of them when intact)."""
    head: Head | None
    broken: BrokenLink | None

    @property
    def intact(self) -> bool:
        """Whether every link holds."""
        return self.broken is None

    def to_json(self) -> dict[str, Any]:
        """The report as ``idp audit verify --json`` prints it."""
        return {
            "intact": self.intact,
            "count": self.count,
            "head": None if self.head is None else {"seq": self.head.seq, "hash": self.head.hash},
            "broken": None if self.broken is None else {
                "seq": self.broken.seq, "reason": self.broken.reason.value, "message": self.broken.message,
            },
        }


def check_chain(entries: Iterable[AuditEntry], *, head: Head | None, start: Head | None = None) -> ChainReport:
    """Walk ``entries`` in ``seq`` order and report the first broken link.

    For each record: its number follows the previous one (else SEQUENCE_GAP), it names the
    previous hash (PREV_HASH_MISMATCH), its fields hash to its hash (HASH_MISMATCH). Then the
    last record must be ``head`` (a record missing at the end is a SEQUENCE_GAP, one beyond it
    AFTER_HEAD, another hash HEAD_MISMATCH). ``start`` is the record before the first entry, for
    a partial export (default: the beginning of the log); ``head`` None skips the final check.
    """
    previous = start or Head(seq=0, hash=GENESIS_HASH)
    count = 0
    for entry in entries:
        broken = _check_link(entry, previous)
        if broken is not None:
            return ChainReport(count=count, head=head, broken=broken)
        previous = Head(seq=entry.seq, hash=entry.hash)
        count += 1
    if head is None:
        return ChainReport(count=count, head=None, broken=None)
    return ChainReport(count=count, head=head, broken=_check_head(previous, head))


def _check_link(entry: AuditEntry, previous: Head) -> BrokenLink | None:
    expected = previous.seq + 1
    if entry.seq != expected:
        return BrokenLink(
            seq=expected, reason=Reason.SEQUENCE_GAP,
            message=f"record {expected} is missing: record {previous.seq} is followed by {entry.seq}",
        )
    if entry.prev_hash != previous.hash:
        return BrokenLink(
            seq=entry.seq, reason=Reason.PREV_HASH_MISMATCH,
            message=f"record {entry.seq} does not name the hash of record {previous.seq}",
        )
    computed = record_hash(
        seq=entry.seq, time=entry.time, event=entry.event, actor=entry.actor, subject=entry.subject,
        details=entry.details, prev_hash=entry.prev_hash,
    )
    if computed != entry.hash:
        return BrokenLink(
            seq=entry.seq, reason=Reason.HASH_MISMATCH,
            message=f"record {entry.seq} was changed: its fields do not hash to its stored hash",
        )
    return None


def _check_head(last: Head, head: Head) -> BrokenLink | None:
    if last.seq < head.seq:
        return BrokenLink(
            seq=last.seq + 1, reason=Reason.SEQUENCE_GAP,
            message=f"records {last.seq + 1} to {head.seq} are missing: the log ends before its head",
        )
    if last.seq > head.seq:
        return BrokenLink(
            seq=head.seq + 1, reason=Reason.AFTER_HEAD,
            message=f"record {head.seq + 1} follows the head (record {head.seq}): the log did not write it",
        )
    if last.hash != head.hash:
        return BrokenLink(
            seq=head.seq, reason=Reason.HEAD_MISMATCH,
            message=f"the head names another hash than record {head.seq}'s",
        )
    return None
