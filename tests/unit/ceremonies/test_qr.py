"""The rotating QR payload: accepted fresh, refused when stale, forged, future or malformed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from idp.ceremonies.qr import QrRejected, qr_payload, read_qr_payload, verify_qr

NOW = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
PERIOD = timedelta(seconds=1)
MAX_AGE = timedelta(seconds=3)
SECRET = b"k" * 32


def scan(payload: str, *, now: datetime = NOW, secret: bytes = SECRET) -> None:
    verify_qr(read_qr_payload(payload), secret=secret, now=now, period=PERIOD, max_age=MAX_AGE)


def payload(now: datetime = NOW, transaction_id: str = "txn") -> str:
    return qr_payload(transaction_id=transaction_id, secret=SECRET, now=now, period=PERIOD)


def test_fresh_code_is_accepted() -> None:
    scan(payload())
    scan(payload(), now=NOW + MAX_AGE)


def test_code_changes_every_period() -> None:
    assert payload() != payload(NOW + PERIOD)
    assert read_qr_payload(payload()).transaction_id == "txn"


def test_stale_code_is_refused() -> None:
    with pytest.raises(QrRejected, match="stale"):
        scan(payload(), now=NOW + MAX_AGE + PERIOD)


def test_future_code_is_refused() -> None:
    with pytest.raises(QrRejected, match="future"):
        scan(payload(NOW + PERIOD))


def test_forged_code_is_refused() -> None:
    with pytest.raises(QrRejected, match="not made for this transaction"):
        scan(payload(), secret=b"x" * 32)


def test_code_for_another_transaction_is_refused() -> None:
    parts = payload().split(".")
    parts[1] = "other"
    with pytest.raises(QrRejected, match="not made for this transaction"):
        scan(".".join(parts))


@pytest.mark.parametrize("text", ["", "myna.txn.1", "other.txn.1.ab", "myna.txn.x1.ab", "myna.a.b.c.d"])
def test_malformed_code_is_refused(text: str) -> None:
    with pytest.raises(QrRejected, match="not a Myna Gateway login code"):
        read_qr_payload(text)
