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
from datetime import datetime, timedelta
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
from idp.pki.registry import CertificateState
from idp.signing.errors import Reason as SigningReason
from idp.signing.errors import SigningRejected
from idp.signing.flow import Decision, LookupRequired, Signer, SigningFlow
from idp.webhooks.outbox import RequestEnded
from idp.webhooks.records import WebhookEvent

__all__ = [
    "AMR",
    "ApprovalService",
    "ApprovalSettings",
    "AssertionReplayed",
    "SignatureKeyRenewalRequired",
    "TransactionClosed",
]

log = logging.getLogger("idp.ceremonies")

AMR = ("hwk", "user", "mfa")
"""RFC 8176: a hardware-held key, user presence and verification (biometrics) — two factors."""
_OPEN = frozenset({TransactionStatus.PENDING, TransactionStatus.SCANNED})
_ENDED_AS = {
    WebhookEvent.COMPLETED: TransactionStatus.APPROVED,
    WebhookEvent.DECLINED: TransactionStatus.DECLINED,
    WebhookEvent.EXPIRED: TransactionStatus.EXPIRED,
}
"""The transaction status a signing request's announced event stands for (``idp.webhooks``)."""
_DECIDED_AS = {
    Decision.APPROVE: TransactionStatus.APPROVED,
    Decision.DECLINE: TransactionStatus.DECLINED,
    Decision.CANCEL: TransactionStatus.CANCELLED,
}
"""The transaction status a signing transaction's decision (``SigningFlow.decide``) stands for."""
_CERTIFICATE_REFUSALS = frozenset({Reason.CERTIFICATE_REVOKED, Reason.CERTIFICATE_EXPIRED})


class TransactionClosed(Exception):
    """The transaction was already decided, cancelled or expired."""

    def __init__(self, status: TransactionStatus) -> None:
        super().__init__(status.value)
        self.status = status


class AssertionReplayed(Exception):
    """The assertion's counter was already used: the same approval was sent twice."""


class SignatureKeyRenewalRequired(Exception):
    """The phone proved itself, but its smartphone signature certificate is not good.

    Raised only after the login assertion verified and the user-authentication certificate was
    found good, so it tells the phone nothing about a certificate it does not hold. The signature
    certificate is revoked (a move: ``affiliationChanged``; a found phone: ``superseded``), on hold
    or expired: attributes and document signatures wait until the phone enrolls a new signature
    key with the card (``idp.ceremonies.signature_key``). The transaction stays open.
    """

    def __init__(self, *, status: str, reason: str | None) -> None:
        """``status``: ``revoked``, ``on_hold`` or ``expired``; ``reason``: the RFC 5280 reason name, if any."""
        super().__init__(status if reason is None else f"{status} ({reason})")
        self.status = status
        self.reason = reason


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

    def from_qr(self, payload: str, *, credential_id: bytes | None = None) -> LoginTransaction:
        """The open transaction a scanned QR code names.

        ``credential_id``: the looking-up phone's authentication credential; the phone a signing
        transaction's documents were prepared for may look it up again with the code it scanned
        then, however old (after renewing its signature key: ``LookupRequired``).
        Raises QrRejected, UnknownTransaction or TransactionClosed.
        """
        scanned = read_qr_payload(payload)
        now = self._clock.now()
        state = self._transactions.load(scanned.transaction_id, now=now)
        verify_qr(scanned, secret=state.transaction.qr_secret, now=now, period=self._settings.qr_period,
                  max_age=self._max_age(state.transaction, self._settings.qr_max_age, credential_id))
        return self._open(state)

    def from_link(self, transaction_id: str, token: str, *, credential_id: bytes | None = None) -> LoginTransaction:
        """The open transaction a same-device link names (``credential_id`` as for ``from_qr``).

        Raises QrRejected, UnknownTransaction or TransactionClosed.
        """
        step, _, tag = token.partition(".")
        if not step.isdigit() or not tag:
            raise QrRejected("not a Myna Gateway link")
        now = self._clock.now()
        state = self._transactions.load(transaction_id, now=now)
        verify_qr(ScannedQr(transaction_id=transaction_id, step=int(step), tag=tag), secret=state.transaction.qr_secret,
                  now=now, period=self._settings.qr_period,
                  max_age=self._max_age(state.transaction, self._settings.link_max_age, credential_id))
        return self._open(state)

    def _max_age(self, transaction: LoginTransaction, max_age: timedelta, credential_id: bytes | None) -> timedelta:
        """``max_age``, or the transaction's whole life when ``credential_id`` names the phone its
        documents were prepared for: that phone had the transaction from a fresh code already."""
        if credential_id is None or self._signing is None or transaction.request.signing is None:
            return max_age
        prepared_for = self._signing.prepared_for(transaction.id)
        if prepared_for is None:
            return max_age
        device = self._devices.credential(credential_id, with_signature_certificate=False)
        if device is None or device.device_id != prepared_for:
            return max_age
        return transaction.expires_at - transaction.created_at

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
        SignatureKeyRenewalRequired (the assertion verified, but attributes or documents need a
        signature certificate that is no longer good; not counted as a failed approval),
        AssertionReplayed, or, for a signing request, SigningRejected (``document_signatures``:
        one per document, by the signature key, over what ``prepare_signing`` gave the phone) or
        LookupRequired (the documents were prepared for the phone's previous signature
        certificate: not counted as a failed approval).
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
            logged = _rejected(transaction, rejected.reason)
            renewal = _signature_key_renewal(device, now) if rejected.reason in _CERTIFICATE_REFUSALS else None
            if renewal is not None:  # the phone proved itself: not a failed approval
                raise renewal from rejected
            self._failed(device.person_id)
            raise logged from rejected
        if signing is not None:  # no document is assembled for a certificate that is not good
            renewal = _signature_key_renewal(device, now)
            if renewal is not None:
                _signing_rejected(transaction, SigningRejected(
                    SigningReason.CERTIFICATE_EXPIRED if renewal.status == "expired"
                    else SigningReason.CERTIFICATE_REVOKED, "the signature certificate is not good"))
                raise renewal
        if not self._devices.advance_sign_count(verified.device_id, verified.new_sign_count):
            self._failed(device.person_id)
            raise AssertionReplayed(transaction.id)
        if signing is not None:  # only after the login assertion verified: the phone is who it says
            self._sign(transaction, device, document_signatures, release=verified.consented_attributes)
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
        """The user said no on the phone. Raises UnknownTransaction or TransactionClosed.

        When the browser cancelled first, the phone's no is the same negative outcome: no error.
        """
        transaction = self._require_open(self._transactions.load(transaction_id, now=self._clock.now()))
        if self._signing is not None and transaction.request.signing is not None:
            try:
                self._decide(transaction, Decision.DECLINE)
            except TransactionClosed as closed:
                if closed.status is TransactionStatus.CANCELLED:
                    return
                raise
            try:  # the webhook outbox decides first: completion, decline and expiry, one of them only
                self._signing.decline(transaction.request.signing, client_id=transaction.request.client_id)
            except RequestEnded as ended:
                raise TransactionClosed(_ENDED_AS[ended.event]) from ended
        if not self._transactions.settle(transaction, Outcome(kind=OutcomeKind.DECLINED)):
            status = self._transactions.status(transaction, now=self._clock.now())
            if status is TransactionStatus.CANCELLED:  # the browser cancelled first: the same no
                return
            raise TransactionClosed(status)
        log.info("login.declined transaction=%s", transaction.id)
        metrics.ceremony_completed("login", outcome="declined")

    def cancel(self, transaction: LoginTransaction) -> bool:
        """The browser cancelled: settle the transaction as cancelled. False when the phone decided
        first (its approval of a signing request may still be storing the documents): follow it.

        A signing request's cancel takes the transaction's one decision, then is announced to a
        client with a webhook as ``signing.declined``.
        """
        signing = transaction.request.signing
        if self._signing is not None and signing is not None:
            if self._signing.decide(transaction.id, Decision.CANCEL) is not None:
                return False
            try:
                self._signing.decline(signing, client_id=transaction.request.client_id)
            except RequestEnded as ended:
                if ended.event is WebhookEvent.COMPLETED:  # never while the cancel holds the decision
                    return False
                # announced as expired already: the login ends as cancelled all the same
        if not self._transactions.settle(transaction, Outcome(kind=OutcomeKind.CANCELLED)):
            return False
        log.info("login.cancelled transaction=%s", transaction.id)
        return True

    def _decide(self, transaction: LoginTransaction, decision: Decision) -> None:
        """Take a signing transaction's one decision. Raises TransactionClosed when another came first."""
        if self._signing is None:
            return
        first = self._signing.decide(transaction.id, decision)
        if first is not None:
            raise TransactionClosed(_DECIDED_AS[first])

    def _reopen(self, transaction: LoginTransaction) -> None:
        if self._signing is not None:
            self._signing.reopen(transaction.id)

    def _sign(
        self, transaction: LoginTransaction, device: DeviceCredential, signatures: Sequence[bytes],
        *, release: tuple[str, ...],
    ) -> None:
        """Take the transaction's decision, then ``_finish_signing``; a refusal gives the decision back.

        Any other failure (a store unreachable) keeps it: whether the results were written is then
        unknown, so the browser's cancel must not win; the transaction expires instead.
        """
        self._decide(transaction, Decision.APPROVE)  # before anything is stored: a cancel from now on loses
        try:
            self._finish_signing(transaction, device, signatures, release=release)
        except (SigningRejected, LookupRequired, TransactionClosed):
            self._reopen(transaction)  # nothing was stored: the phone may approve again, the browser cancel
            raise

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
                                 signatures=signatures, release=release, deadline=transaction.expires_at)
        except SigningRejected as rejected:
            self._failed(device.person_id)
            raise _signing_rejected(transaction, rejected) from rejected
        except RequestEnded as ended:  # announced as declined or expired meanwhile: nothing was stored
            raise TransactionClosed(_ENDED_AS[ended.event]) from ended
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


def _signature_key_renewal(device: DeviceCredential, now: datetime) -> SignatureKeyRenewalRequired | None:
    """The renewal the phone needs when its signature certificate is not good, else None.

    None too while the user-authentication certificate is not good: then the phone itself is
    refused. ``verify_login`` checks the user-authentication certificate after the assertion's
    signature and the signature certificate after that (for the consent), so a certificate
    refusal while the user-authentication certificate is good came from the signature
    certificate, from a phone that proved it holds the authentication key.
    """
    auth, sign = device.auth_certificate, device.sign_certificate_status
    if auth.state is not CertificateState.GOOD or now >= auth.not_after or sign is None:
        return None
    if sign.state is not CertificateState.GOOD:
        return SignatureKeyRenewalRequired(status=sign.state.value,
                                           reason=None if sign.reason is None else sign.reason.value)
    if now >= sign.not_after:
        return SignatureKeyRenewalRequired(status="expired", reason=None)
    return None


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

