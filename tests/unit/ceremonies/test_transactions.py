"""Login transactions on both ephemeral stores: status derivation, settle once, claim once."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from idp.ceremonies.transactions import (
    AuthorizationRequest,
    LoginTransaction,
    Outcome,
    OutcomeKind,
    TransactionStatus,
    TransactionStore,
    UnknownTransaction,
    browser_binding,
)

if TYPE_CHECKING:
    from idp.clock import FixedClock
    from idp.store.ephemeral import EphemeralStore

TTL = timedelta(seconds=300)
REQUEST = AuthorizationRequest(
    client_id="client", redirect_uri="https://rp.example/cb", scope=("openid", "name"), state="s", nonce="n",
    code_challenge="c" * 43, prompt=("login",), max_age=60, acr_values=("a",), claims={"userinfo": {"name": None}},
    ui_locales=("ja",), requested_attributes=("name",),
)


@pytest.fixture
def store(ephemeral_store: EphemeralStore) -> TransactionStore:
    return TransactionStore(ephemeral_store, ttl=TTL)


@pytest.fixture
def transaction(store: TransactionStore, fixed_clock: FixedClock) -> LoginTransaction:
    return store.open(request=REQUEST, rp_name="Shop", browser_secret="secret", now=fixed_clock.now())


def approved(fixed_clock: FixedClock) -> Outcome:
    return Outcome(kind=OutcomeKind.APPROVED, person_id="p", auth_time=fixed_clock.now(), amr=("hwk",),
                   consented_attributes=("name",), signature_certificate_serial=2**150)


def test_open_then_get_round_trips(store: TransactionStore, transaction: LoginTransaction) -> None:
    assert store.get(transaction.id) == transaction
    assert len(transaction.verification_code) == 4
    assert transaction.browser_binding == browser_binding("secret")
    assert "secret" not in repr(transaction)


def test_unknown_transaction_is_refused(store: TransactionStore) -> None:
    with pytest.raises(UnknownTransaction):
        store.get("nope")


def test_status_goes_pending_scanned_approved_completed(
    store: TransactionStore, transaction: LoginTransaction, fixed_clock: FixedClock,
) -> None:
    now = fixed_clock.now()
    assert store.status(transaction, now=now) is TransactionStatus.PENDING
    assert store.mark_scanned(transaction)
    assert not store.mark_scanned(transaction)
    assert store.status(transaction, now=now) is TransactionStatus.SCANNED
    assert store.settle(transaction, approved(fixed_clock))
    assert store.status(transaction, now=now) is TransactionStatus.APPROVED
    assert store.claim(transaction) == approved(fixed_clock)
    assert store.status(transaction, now=now) is TransactionStatus.COMPLETED


def test_status_is_expired_past_expiry(store: TransactionStore, transaction: LoginTransaction) -> None:
    assert store.status(transaction, now=transaction.expires_at) is TransactionStatus.EXPIRED


def test_settle_once_first_decision_wins(
    store: TransactionStore, transaction: LoginTransaction, fixed_clock: FixedClock,
) -> None:
    assert store.settle(transaction, Outcome(kind=OutcomeKind.CANCELLED))
    assert not store.settle(transaction, approved(fixed_clock))
    assert store.status(transaction, now=fixed_clock.now()) is TransactionStatus.CANCELLED
    assert store.claim(transaction) is None


def test_claim_once(store: TransactionStore, transaction: LoginTransaction, fixed_clock: FixedClock) -> None:
    store.settle(transaction, approved(fixed_clock))
    assert store.claim(transaction) is not None
    assert store.claim(transaction) is None


def test_declined_outcome_cannot_be_claimed(
    store: TransactionStore, transaction: LoginTransaction, fixed_clock: FixedClock,
) -> None:
    store.settle(transaction, Outcome(kind=OutcomeKind.DECLINED))
    assert store.status(transaction, now=fixed_clock.now()) is TransactionStatus.DECLINED
    assert store.claim(transaction) is None


def test_pending_outcome_cannot_be_claimed(store: TransactionStore, transaction: LoginTransaction) -> None:
    assert store.outcome(transaction) is None
    assert store.claim(transaction) is None
