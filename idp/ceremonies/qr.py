"""The rotating login QR code: a time-based HMAC over a per-transaction secret.

As BankID's animated QR does, the code shown on the login page changes every step (one second
by default): ``myna.<transaction id>.<step>.<HMAC-SHA256(qr_secret, "<transaction id>.<step>")
truncated>``. The phone sends the scanned payload back when it fetches the transaction; the
portal accepts it only if the HMAC matches and the step is at most ``max_age`` old, so a code
photographed or relayed goes stale within seconds.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["QrRejected", "ScannedQr", "qr_payload", "read_qr_payload", "verify_qr"]

PREFIX = "myna"
TAG_BYTES = 16


class QrRejected(ValueError):
    """The scanned payload is malformed, forged or stale."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScannedQr:
    """An unverified payload's parts: the transaction it names, and its step and tag."""

    transaction_id: str
    step: int
    tag: str


def _step(now: datetime, period: timedelta) -> int:
    return int(now.timestamp() // period.total_seconds())


def _tag(secret: bytes, transaction_id: str, step: int) -> str:
    mac = hmac.new(secret, f"{transaction_id}.{step}".encode(), hashlib.sha256).digest()
    return mac[:TAG_BYTES].hex()


def qr_payload(*, transaction_id: str, secret: bytes, now: datetime, period: timedelta) -> str:
    """The QR code's text for the step containing ``now``."""
    step = _step(now, period)
    return f"{PREFIX}.{transaction_id}.{step}.{_tag(secret, transaction_id, step)}"


def read_qr_payload(payload: str) -> ScannedQr:
    """Split a scanned payload (unverified: check it with ``verify_qr``). Raises QrRejected."""
    parts = payload.split(".")
    if len(parts) != 4 or parts[0] != PREFIX or not parts[2].isdigit():  # noqa: PLR2004 - four dot-separated parts
        raise QrRejected("not a Myna Gateway login code")
    return ScannedQr(transaction_id=parts[1], step=int(parts[2]), tag=parts[3])


def verify_qr(scanned: ScannedQr, *, secret: bytes, now: datetime, period: timedelta, max_age: timedelta) -> None:
    """Accept a scanned code made with ``secret`` no more than ``max_age`` ago. Raises QrRejected."""
    current = _step(now, period)
    if scanned.step > current:
        raise QrRejected("the code is from the future")
    if (current - scanned.step) * period > max_age:
        raise QrRejected("the code is stale")
    if not hmac.compare_digest(scanned.tag, _tag(secret, scanned.transaction_id, scanned.step)):
        raise QrRejected("the code was not made for this transaction")
