"""A phone's life after enrollment: lost (suspended), found (resumed), replaced (superseded).

A lost phone is suspended from another device by tapping the My Number Card, or by an operator
(``idp phones suspend``): both smartphone certificates go on hold (RFC 5280 certificateHold), so
the phone cannot log in or sign, and the grants issued on its logins are revoked. Found, it is
resumed: the user-authentication certificate comes off hold (it leaves the CRL and OCSP answers
good again, removeFromCRL), while the signature certificate, whose key was out of the person's
hands, is revoked for good (superseded): the phone enrolls a new signature key before it signs or
releases attributes again.

The card-authenticated device API (``/device/v1/phones``) works like an enrollment's card step::

    POST /device/v1/phones/challenges           → 201 {challenge_id, card_challenge, expires_at}
    POST /device/v1/phones/{device_id}/suspend  {challenge_id, card: {auth_certificate, auth_signature}}
    POST /device/v1/phones/{device_id}/resume   (the same body)

The card's user-authentication key signs ``card_digest`` (RSASSA-PKCS1-v1_5, SHA-256) over the
action, the device id and the challenge; its certificate must chain to a J-LIS root, be good
(revocation required, as at enrollment) and belong to the person whose phone it names. A card
of anyone else is refused (403 ``card-not-the-holders``) and changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from flask import Blueprint, Response, jsonify, request
from sqlalchemy import and_, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import NotFound

from idp.audit import AuditEvent, append_in, certificate_subject
from idp.ceremonies.enrollment import EnrollmentTrust
from idp.ceremonies.problems import DeviceProblem, InvalidDeviceRequest, ServiceUnavailable
from idp.ceremonies.records import DeviceRecord, DeviceStatus, PersonCardCertificate
from idp.ceremonies.revocation_cache import CardRevocationPolicy, JlisRevocationCache
from idp.clock import Clock
from idp.pki.registry import AlreadyRevoked, CertificateRef, CertificateState
from idp.pki.service import SMARTPHONE_CA_NAME, PortalPki
from idp.pki.validation import CertificateRejected, Purpose, validate_certificate
from idp.settings import Settings
from idp.store.ephemeral import EphemeralStore
from idp.web.problems import PROBLEM_BASE, register_problem_handler

__all__ = [
    "ACTIONS",
    "CARD_DIGEST_LABEL",
    "PHONE_LIFE_EXTENSION",
    "CardCheck",
    "CardNotTheHolders",
    "CardRejected",
    "PhoneLife",
    "PhoneNotActive",
    "PhoneNotSuspended",
    "UnknownPhone",
    "card_digest",
    "card_signed",
    "create_blueprint",
]

PHONE_LIFE_EXTENSION = "myna.phone_life"
"""Where the app keeps its instance (``app.extensions``)."""

log = logging.getLogger("idp.ceremonies")

CARD_DIGEST_LABEL = b"myna-phone-life-v1"
ACTIONS = ("suspend", "resume")
CHALLENGE_TTL = timedelta(minutes=5)
"""How long a card challenge waits for the card's signature."""
_USED_FOR = timedelta(minutes=10)
_MAX_CERTIFICATE_CHARS = 8192


class UnknownPhone(DeviceProblem):
    """No device has that id (or it was replaced by a newer phone)."""

    type = f"{PROBLEM_BASE}unknown-phone"
    title = "There is no such phone"
    status = 404


class PhoneNotActive(DeviceProblem):
    """The phone is revoked, or its certificates are no longer good: there is nothing to suspend."""

    type = f"{PROBLEM_BASE}phone-not-active"
    title = "This phone is not active"
    status = 409


class PhoneNotSuspended(DeviceProblem):
    """Only a suspended phone can be resumed."""

    type = f"{PROBLEM_BASE}phone-not-suspended"
    title = "This phone is not suspended"
    status = 409


class CardRejected(DeviceProblem):
    """The card certificate is not a good J-LIS user-authentication certificate, or its signature
    does not verify, or the challenge is unknown or used. The exact reason is logged."""

    type = f"{PROBLEM_BASE}card-rejected"
    title = "The card was not accepted"
    status = 403


class CardNotTheHolders(DeviceProblem):
    """A good card, but not one of the person whose phone the request names."""

    type = f"{PROBLEM_BASE}card-not-the-holders"
    title = "This card does not belong to the phone's holder"
    status = 403


def card_digest(*, action: str, device_id: str, challenge: bytes) -> bytes:
    """SHA-256("myna-phone-life-v1" || 0 || action || 0 || device id || 0 || challenge): what the card signs."""
    return hashlib.sha256(b"\0".join((CARD_DIGEST_LABEL, action.encode(), device_id.encode(), challenge))).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Phone:
    device_id: str
    person_id: str
    status: str
    auth_serial: int
    sign_serial: int


class CardCheck:
    """The card step of a phone request made from another device: challenge, certificate, signature, holder."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        ephemeral: EphemeralStore,
        clock: Clock,
        trust: EnrollmentTrust,
        revocation: JlisRevocationCache,
    ) -> None:
        """``trust`` and ``revocation`` are the enrollment's (``EnrollmentService.trust``, ``.revocation``)."""
        self._settings = settings
        self._sessions = sessions
        self._ephemeral = ephemeral
        self._clock = clock
        self._trust = trust
        self._revocation = revocation

    def __repr__(self) -> str:
        return f"CardCheck({self._settings.issuer!r})"

    def new_challenge(self) -> dict[str, Any]:
        """A one-time challenge for the card to sign."""
        challenge_id, challenge = secrets.token_urlsafe(24), secrets.token_bytes(32)
        if not self._ephemeral.put_new(_key(challenge_id), challenge, ttl=CHALLENGE_TTL):  # pragma: no cover
            raise ServiceUnavailable
        return {
            "challenge_id": challenge_id,
            "card_challenge": base64.urlsafe_b64encode(challenge).rstrip(b"=").decode(),
            "expires_at": (self._clock.now() + CHALLENGE_TTL).isoformat(),
        }

    def authenticate_card(
        self, *, challenge_id: str, action: str, device_id: str, certificate: x509.Certificate, signature: bytes,
    ) -> str:
        """Take the challenge (once), check the card certificate and its signature, and that the card
        is the holder's of ``device_id``; return the person's id.

        Raises UnknownPhone, CardRejected or CardNotTheHolders.
        """
        challenge = self._ephemeral.take(_key(challenge_id))
        if challenge is None:
            raise _card_rejected("challenge_unknown_or_used", device_id)
        phone = _load_phone(self._sessions, device_id)
        now = self._clock.now()
        sources = self._revocation.card_status(
            [certificate], policy=CardRevocationPolicy(self._settings.pki.card_revocation),
            crl_max_age=self._settings.pki.card_crl_max_age, now=now,
        )
        try:
            validate_certificate(
                certificate, purpose=Purpose.CARD_AUTH, trust_roots=self._trust.jlis_roots,
                intermediates=self._trust.jlis_intermediates, crls=sources.crls,
                ocsp_responses=sources.ocsp_responses, now=now,
            )
        except CertificateRejected as exc:
            raise _card_rejected(f"certificate_{exc.reason.value}", device_id) from exc
        if not card_signed(certificate, card_digest(action=action, device_id=device_id, challenge=challenge),
                            signature):
            raise _card_rejected("signature_invalid", device_id)
        if self._holder_of(certificate) != phone.person_id:
            log.warning("phone.card_rejected reason=not_the_holders device=%s", device_id)
            raise CardNotTheHolders
        return phone.person_id

    def _holder_of(self, certificate: x509.Certificate) -> str | None:
        """The person a card certificate belongs to (by issuer key id and serial), or None."""
        ref = CertificateRef.of(certificate)
        statement = select(PersonCardCertificate.person_id).where(and_(
            PersonCardCertificate.issuer_key_id == ref.issuer_key_id,
            PersonCardCertificate.serial == str(ref.serial_number),
        ))
        with self._sessions() as session:
            return session.scalar(statement)


class PhoneLife:
    """Suspend a lost phone, resume a found one; for the card-authenticated API and ``idp phones``."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        pki: PortalPki,
        clock: Clock,
        revoke_grants: Callable[[str], object],
    ) -> None:
        """``revoke_grants(device_id)`` revokes the OAuth grants issued on a device (``idp.oidc``)."""
        self._sessions = sessions
        self._pki = pki
        self._clock = clock
        self._revoke_grants = revoke_grants

    def __repr__(self) -> str:
        return f"PhoneLife({self._pki!r})"

    def suspend(self, device_id: str, *, actor: str) -> None:
        """Put both certificates of an active phone on hold and revoke the grants issued on it.

        Raises UnknownPhone, or PhoneNotActive when the phone is revoked or its user-authentication
        certificate is not good (already held, or revoked).
        """
        phone = _load_phone(self._sessions, device_id)
        auth = self._pki.status(phone.auth_serial)
        if phone.status != DeviceStatus.ACTIVE.value or auth is None or auth.state is not CertificateState.GOOD:
            raise PhoneNotActive
        held = []
        for serial in (phone.auth_serial, phone.sign_serial):
            status = self._pki.status(serial)
            if status is not None and status.state is CertificateState.GOOD:
                try:
                    self._pki.revoke(serial, x509.ReasonFlags.certificate_hold)
                except AlreadyRevoked:  # revoked for good meanwhile (a sync after a move): nothing to hold
                    continue
                held.append(serial)
        self._audit(AuditEvent.CERTIFICATE_REVOKED, phone, held, actor=actor,
                    details={"reason": x509.ReasonFlags.certificate_hold.value})
        grants = self._revoke_grants(device_id)
        log.info("phone.suspended device=%s actor=%s grants=%s", device_id, actor.partition(":")[0], grants)

    def resume(self, device_id: str, *, actor: str) -> None:
        """Take a suspended phone's user-authentication certificate off hold; revoke its signature
        certificate for good (superseded), so that the phone enrolls a new signature key.

        Raises UnknownPhone, or PhoneNotSuspended when its user-authentication certificate is not on hold.
        """
        phone = _load_phone(self._sessions, device_id)
        auth = self._pki.status(phone.auth_serial)
        if phone.status != DeviceStatus.ACTIVE.value or auth is None or auth.state is not CertificateState.ON_HOLD:
            raise PhoneNotSuspended
        self._pki.resume(phone.auth_serial)
        self._audit(AuditEvent.CERTIFICATE_RESUMED, phone, [phone.auth_serial], actor=actor, details={})
        sign = self._pki.status(phone.sign_serial)
        if sign is not None and sign.state is not CertificateState.REVOKED:
            self._pki.revoke(phone.sign_serial, x509.ReasonFlags.superseded)
            self._audit(AuditEvent.CERTIFICATE_REVOKED, phone, [phone.sign_serial], actor=actor,
                        details={"reason": x509.ReasonFlags.superseded.value})
        log.info("phone.resumed device=%s actor=%s", device_id, actor.partition(":")[0])

    def _audit(self, event: AuditEvent, phone: _Phone, serials: list[int], *, actor: str,
               details: dict[str, Any]) -> None:
        if not serials:
            return
        with self._sessions.begin() as session:
            append_in(session, event, at=self._clock.now(), actor=actor, details=details, subject=[
                f"device:{phone.device_id}", *(certificate_subject(SMARTPHONE_CA_NAME, serial) for serial in serials),
            ])


def _load_phone(sessions: sessionmaker[Session], device_id: str) -> _Phone:
    """The device ``device_id`` (active or revoked); raises UnknownPhone."""
    statement = select(
        DeviceRecord.id, DeviceRecord.person_id, DeviceRecord.status,
        DeviceRecord.auth_certificate_serial, DeviceRecord.sign_certificate_serial,
    ).where(DeviceRecord.id == device_id)
    with sessions() as session:
        row = session.execute(statement).first()
    if row is None:
        raise UnknownPhone
    return _Phone(device_id=row[0], person_id=row[1], status=row[2], auth_serial=int(row[3]), sign_serial=int(row[4]))


def _key(challenge_id: str) -> str:
    return f"phone-life-challenge:{challenge_id}"


def _card_rejected(reason: str, device_id: str) -> CardRejected:
    """Log the private reason once and return the public problem to raise."""
    log.warning("phone.card_rejected reason=%s device=%s", reason, device_id)
    return CardRejected()


def card_signed(certificate: x509.Certificate, digest: bytes, signature: bytes) -> bool:
    """Whether the card key of ``certificate`` signed ``digest`` (RSASSA-PKCS1-v1_5, SHA-256)."""
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    try:
        public_key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _card_body() -> tuple[str, x509.Certificate, bytes]:
    """The challenge id, card certificate and card signature of a request (unverified)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidDeviceRequest("send a JSON object with Content-Type: application/json")
    challenge_id = body.get("challenge_id")
    if not isinstance(challenge_id, str) or not challenge_id or len(challenge_id) > 128:  # noqa: PLR2004
        raise InvalidDeviceRequest("challenge_id must be a non-empty string")
    card = body.get("card")
    if not isinstance(card, dict):
        raise InvalidDeviceRequest("card must be an object with auth_certificate and auth_signature")
    certificate, signature = card.get("auth_certificate"), card.get("auth_signature")
    if not isinstance(certificate, str) or len(certificate) > _MAX_CERTIFICATE_CHARS:
        raise InvalidDeviceRequest("card.auth_certificate must be a base64 DER certificate")
    if not isinstance(signature, str) or len(signature) > _MAX_CERTIFICATE_CHARS:
        raise InvalidDeviceRequest("card.auth_signature must be base64url")
    try:
        parsed = x509.load_der_x509_certificate(base64.b64decode(certificate, validate=True))
        raw_signature = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidDeviceRequest("card.auth_certificate must be base64 DER, card.auth_signature base64url") \
            from exc
    return challenge_id, parsed, raw_signature


def create_blueprint(cards: CardCheck, life: PhoneLife) -> Blueprint:
    """The card-authenticated phone endpoints of the device API."""
    blueprint = Blueprint("phone_life", __name__, url_prefix="/device/v1/phones")
    register_problem_handler(blueprint)

    @blueprint.post("/challenges")
    def new_challenge() -> tuple[Response, int]:
        return jsonify(cards.new_challenge()), 201

    @blueprint.post("/<device_id>/<action>")
    def life_event(device_id: str, action: str) -> Response:
        if action not in ACTIONS:
            raise NotFound
        challenge_id, certificate, signature = _card_body()
        person_id = cards.authenticate_card(challenge_id=challenge_id, action=action, device_id=device_id,
                                           certificate=certificate, signature=signature)
        if action == "suspend":
            life.suspend(device_id, actor=f"person:{person_id}")
            return jsonify({"status": "suspended"})
        life.resume(device_id, actor=f"person:{person_id}")
        return jsonify({"status": "resumed", "signature_key": "reenroll"})

    return blueprint
