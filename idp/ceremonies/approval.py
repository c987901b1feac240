"""The phone's side of a login transaction: look it up, approve it, or decline it.

The phone finds the transaction from the rotating QR code it scanned (or the same-device link),
shows the RP's name, the verification code and the attributes asked for, and answers with a
WebAuthn assertion by its authentication key (plus, for attributes, a consent signature by its
signature key). Only ``verify_login`` decides whether an approval counts; this service loads
what it needs and records its verdict, each write a single atomic step.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from idp.ceremonies.devices import SqlDeviceDirectory
from idp.ceremonies.login import DeviceCredential, LoginRejected, Reason, verify_login
from idp.ceremonies.qr import QrRejected, ScannedQr, read_qr_payload, verify_qr
from idp.ceremonies.transactions import (
    ACR_SMARTPHONE_SE,
    LoginTransaction,
    Outcome,
    OutcomeKind,
    TransactionState,
    TransactionStatus,
    TransactionStore,
)
from idp.clock import Clock
from idp.ops import metrics
from idp.signing.errors import Reason as SigningReason
from idp.signing.errors import SigningRejected
from idp.signing.flow import Signer, SigningFlow

__all__ = [
    "AMR",
    "ApprovalService",
    "ApprovalSettings",
    "AssertionReplayed",
    "TransactionClosed",
]

log = logging.getLogger("idp.ceremonies")

AMR = ("hwk", "user", "mfa")
"""RFC 8176: a hardware-held key, user presence and verification (biometrics) — two factors."""
_OPEN = frozenset({TransactionStatus.PENDING, TransactionStatus.SCANNED})


class TransactionClosed(Exception):
    """The transaction was already decided, cancelled or expired."""

    def __init__(self, status: TransactionStatus) -> None:
        super().__init__(status.value)
        self.status = status


class AssertionReplayed(Exception):
    """The assertion's counter was already used: the same approval was sent twice."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalSettings:
    """Where the phone's WebAuthn assertions are bound, and how old a scanned QR may be."""

    rp_id: str
    origin: str
    qr_period: timedelta
    qr_max_age: timedelta
    link_max_age: timedelta


class ApprovalGuard(Protocol):
    """Locks a person's approvals after repeated refusals (``idp.ops.rate_limits.RateLimiter``)."""

    def check_person(self, person_id: str) -> None:
        """Raise (a RateLimited) while the person's approvals are locked."""

    def approval_failed(self, person_id: str) -> None:
        """Count a refused approval of the person."""


class ApprovalService:
    """Lookup, approval and decline of login transactions by a phone."""

    def __init__(
        self,
        *,
        transactions: TransactionStore,
        devices: SqlDeviceDirectory,
        settings: ApprovalSettings,
        clock: Clock,
        guard: ApprovalGuard | None = None,
        signing: SigningFlow | None = None,
    ) -> None:
        """``signing``: the document-signing flow, used only by transactions of a signing request."""
        self._signing = signing
        self._transactions = transactions
        self._devices = devices
        self._settings = settings
        self._clock = clock
        self._guard = guard

    def __repr__(self) -> str:
        return f"ApprovalService(rp_id={self._settings.rp_id!r})"

    @property
    def settings(self) -> ApprovalSettings:
        """The binding of assertions (RP ID, origin) and the QR's freshness."""
        return self._settings

    def from_qr(self, payload: str) -> LoginTransaction:
        """The open transaction a scanned QR code names.

        Raises QrRejected, UnknownTransaction or TransactionClosed.
        """
        scanned = read_qr_payload(payload)
        now = self._clock.now()
        state = self._transactions.load(scanned.transaction_id, now=now)
        verify_qr(scanned, secret=state.transaction.qr_secret, now=now,
                  period=self._settings.qr_period, max_age=self._settings.qr_max_age)
        return self._open(state)

    def from_link(self, transaction_id: str, token: str) -> LoginTransaction:
        """The open transaction a same-device link names.

        Raises QrRejected, UnknownTransaction or TransactionClosed.
        """
        step, _, tag = token.partition(".")
        if not step.isdigit() or not tag:
            raise QrRejected("not a Myna Gateway link")
        now = self._clock.now()
        state = self._transactions.load(transaction_id, now=now)
        verify_qr(ScannedQr(transaction_id=transaction_id, step=int(step), tag=tag), secret=state.transaction.qr_secret,
                  now=now, period=self._settings.qr_period, max_age=self._settings.link_max_age)
        return self._open(state)

    def approve(
        self,
        transaction_id: str,
        *,
        assertion: dict[str, Any],
        consent_signature: bytes | None,
        document_signatures: Sequence[bytes] = (),
    ) -> Outcome:
        """Verify the phone's approval and settle the transaction as approved.

        Raises UnknownTransaction, TransactionClosed, LoginRejected (with its reason; an unknown
        or revoked device is BAD_SIGNATURE to the phone, as no enrolled key made it),
        AssertionReplayed, or, for a signing request, SigningRejected (``document_signatures``:
        one per document, by the signature key, over what ``prepare_signing`` gave the phone).
        """
        transaction = self._require_open(self._transactions.load(transaction_id, now=self._clock.now()))
        signing = transaction.request.signing
        device = self._devices.credential(
            _credential_id(assertion),
            with_signature_certificate=bool(transaction.request.requested_attributes) or signing is not None,
        )
        if device is None:
            raise _rejected(transaction, Reason.UNKNOWN_CREDENTIAL)
        if self._guard is not None:
            self._guard.check_person(device.person_id)
        now = self._clock.now()
        try:
            verified = verify_login(transaction=transaction, assertion=assertion, device=device,
                                    consent_signature=consent_signature, rp_id=self._settings.rp_id,
                                    origin=self._settings.origin, now=now)
        except LoginRejected as rejected:
            self._failed(device.person_id)
            raise _rejected(transaction, rejected.reason) from rejected
        if not self._devices.advance_sign_count(verified.device_id, verified.new_sign_count):
            self._failed(device.person_id)
            raise AssertionReplayed(transaction.id)
        if signing is not None:  # only after the login assertion verified: the phone is who it says
            self._finish_signing(transaction, device, document_signatures, release=verified.consented_attributes)
        outcome = Outcome(
            kind=OutcomeKind.APPROVED,
            person_id=verified.person_id,
            device_id=verified.device_id,
            auth_time=verified.authenticated_at,
            amr=AMR,
            acr=ACR_SMARTPHONE_SE,
            consented_attributes=verified.consented_attributes,
            signature_certificate_serial=verified.signature_certificate_serial,
        )
        if not self._transactions.settle(transaction, outcome):
            raise TransactionClosed(self._transactions.status(transaction, now=now))
        log.info("login.approved transaction=%s device=%s", transaction.id, verified.device_id)
        metrics.ceremony_completed("login")
        return outcome

    def prepare_signing(self, transaction: LoginTransaction, *, credential_id: bytes) -> list[dict[str, Any]]:
        """The documents of a signing transaction as the phone shows and signs them (phase 1).

        ``credential_id`` names the looking-up phone's authentication key: its signature
        certificate is the one the signed attributes name. Unverified until ``approve``, which
        accepts the signatures only from that same phone. Raises LoginRejected(UNKNOWN_CREDENTIAL)
        or SigningRejected.
        """
        if self._signing is None or transaction.request.signing is None:
            raise ValueError("not a signing transaction")
        device = self._devices.credential(credential_id, with_signature_certificate=True)
        if device is None or device.sign_certificate is None:
            raise _rejected(transaction, Reason.UNKNOWN_CREDENTIAL)
        try:
            return self._signing.prepare(transaction_id=transaction.id, signing=transaction.request.signing,
                                         signer=_signer(device))
        except SigningRejected as rejected:
            raise _signing_rejected(transaction, rejected) from rejected

    def decline(self, transaction_id: str) -> None:
        """The user said no on the phone. Raises UnknownTransaction or TransactionClosed."""
        transaction = self._require_open(self._transactions.load(transaction_id, now=self._clock.now()))
        if not self._transactions.settle(transaction, Outcome(kind=OutcomeKind.DECLINED)):
            raise TransactionClosed(self._transactions.status(transaction, now=self._clock.now()))
        log.info("login.declined transaction=%s", transaction.id)
        metrics.ceremony_completed("login", outcome="declined")

    def _finish_signing(
        self, transaction: LoginTransaction, device: DeviceCredential, signatures: Sequence[bytes],
        *, release: tuple[str, ...],
    ) -> None:
        """Assemble, verify and store the documents' signatures; refused ones count as failed approvals."""
        if self._signing is None or transaction.request.signing is None or device.sign_certificate is None:
            raise _signing_rejected(transaction, SigningRejected(SigningReason.NOT_SIGNATURE_CERTIFICATE,
                                                                 "no signature certificate to sign with"))
        try:
            self._signing.finish(transaction_id=transaction.id, signing=transaction.request.signing,
                                 client_id=transaction.request.client_id, signer=_signer(device),
                                 signatures=signatures, release=release)
        except SigningRejected as rejected:
            self._failed(device.person_id)
            raise _signing_rejected(transaction, rejected) from rejected
        log.info("signing.completed transaction=%s documents=%d", transaction.id, len(signatures))
        metrics.ceremony_completed("signing")

    def _failed(self, person_id: str) -> None:
        if self._guard is not None:
            self._guard.approval_failed(person_id)

    def _open(self, state: TransactionState) -> LoginTransaction:
        transaction = self._require_open(state)
        if state.status is TransactionStatus.PENDING:  # a second phone's scan changes nothing
            self._transactions.mark_scanned(transaction)
        return transaction

    @staticmethod
    def _require_open(state: TransactionState) -> LoginTransaction:
        if state.status not in _OPEN:
            raise TransactionClosed(state.status)
        return state.transaction


def _credential_id(assertion: dict[str, Any]) -> bytes:
    raw = assertion.get("rawId") if isinstance(assertion, dict) else None
    if not isinstance(raw, str):
        raise LoginRejected(Reason.MALFORMED)
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except ValueError as exc:
        raise LoginRejected(Reason.MALFORMED) from exc


def _signer(device: DeviceCredential) -> Signer:
    if device.sign_certificate is None:
        raise ValueError("the device was loaded without its signature certificate")
    return Signer(device_id=device.device_id, person_id=device.person_id,
                  sign_certificate=device.sign_certificate, auth_public_key=device.public_key)


def _signing_rejected(transaction: LoginTransaction, rejected: SigningRejected) -> SigningRejected:
    """Log a refused document signature once (reason and detail stay in the log) and return it."""
    log.warning("signing.rejected reason=%s transaction=%s detail=%s",
                rejected.reason.value, transaction.id, rejected.detail)
    metrics.ceremony_rejected(rejected.reason.value, kind="signing")
    return rejected


def _rejected(transaction: LoginTransaction, reason: Reason) -> LoginRejected:
    """Log the private reason once, as a structured event, and return the error to raise."""
    log.warning("login.rejected reason=%s transaction=%s", reason.value, transaction.id)
    metrics.ceremony_rejected(reason.value)
    return LoginRejected(reason)

