"""A phone enrolls a new signature key: after a move, or when a lost phone was found.

The phone keeps its device and its user-authentication key; the SE makes a new, attested
signature key, and the My Number Card's signature key vouches for it, as at enrollment::

    POST /device/v1/signature-keys        → 201 {rekey_id, public_key, sign_options, card_challenge, expires_at}
    POST /device/v1/signature-keys/{id}   {assertion, sign_credential, card: {auth_certificate,
                                           sign_certificate, sign_signature}} → 201 {device_id, sign_certificate, chain}

The assertion by the phone's authentication key (over ``public_key.challenge``) says which
device this is, exactly as a login approval does (so a revoked or suspended phone cannot). The
card's signature key signs the enrollment binding digest (``enrollment.binding_digest``) over
``card_challenge``, the device's authentication key and the new signature key. Both card
certificates must be good and be the device holder's (J-LIS linking data is read first when
they are new, as at enrollment). Then a new smartphone signature certificate carries the
attributes of the card's current signature certificate, the device points at it, and the old
signature certificate is revoked (superseded) unless it already was.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Blueprint, Response, jsonify, request
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from webauthn.helpers import parse_registration_credential_json
from webauthn.helpers.structs import RegistrationCredential

from idp.audit import AuditEvent, append_in, certificate_subject
from idp.ceremonies.approval import ApprovalSettings
from idp.ceremonies.attestation import verify_attestation
from idp.ceremonies.device_management import ChallengeNotFound, ChallengeUsed
from idp.ceremonies.device_transactions import ApprovalReplayed, AssertionRejected
from idp.ceremonies.devices import SqlDeviceDirectory
from idp.ceremonies.enrollment import PendingEnrollment, binding_digest, start_enrollment
from idp.ceremonies.enrollment_errors import EnrollmentRejected
from idp.ceremonies.enrollment_service import EnrollmentService, smartphone_subject
from idp.ceremonies.login import LoginRejected, Reason, VerifiedAssertion, verify_assertion
from idp.ceremonies.phone_life import CardNotTheHolders, card_signed
from idp.ceremonies.problems import CardCertificateRejected, CardSignatureRejected, InvalidDeviceRequest, problem_for
from idp.ceremonies.records import DeviceRecord, DeviceStatus, PersonCardCertificate
from idp.ceremonies.revocation_cache import CardRevocationPolicy
from idp.clock import Clock
from idp.pki import attributes as basic_attributes
from idp.pki.profiles import SMARTPHONE_SIGN
from idp.pki.records import IssuedCertificate
from idp.pki.registry import AlreadyRevoked, CertificateRef
from idp.pki.service import SMARTPHONE_CA_NAME, PortalPki
from idp.pki.validation import CertificateRejected, Purpose, validate_certificate
from idp.settings import Settings
from idp.store.ephemeral import EphemeralStore
from idp.web.problems import register_problem_handler

__all__ = ["SignatureKeys", "create_blueprint"]

log = logging.getLogger("idp.ceremonies")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Card:
    auth: x509.Certificate
    sign: x509.Certificate
    sign_signature: bytes


class SignatureKeys:
    """Start and complete a signature-key re-enrollment for an enrolled phone."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        ephemeral: EphemeralStore,
        pki: PortalPki,
        clock: Clock,
        binding: ApprovalSettings,
        enrollments: EnrollmentService,
    ) -> None:
        """``enrollments`` lends its trust anchors, J-LIS status cache and linking-data reader."""
        self._settings = settings
        self._sessions = sessions
        self._devices = SqlDeviceDirectory(sessions)
        self._ephemeral = ephemeral
        self._pki = pki
        self._clock = clock
        self._binding = binding
        self._enrollments = enrollments

    def __repr__(self) -> str:
        return f"SignatureKeys({self._settings.issuer!r})"

    def start(self) -> dict[str, Any]:
        """A pending re-enrollment: an assertion challenge, creation options for the new key, a card challenge."""
        ttl = self._settings.device.enrollment_ttl
        pending = start_enrollment(rp_id=self._binding.rp_id, origin=self._binding.origin, ttl=ttl,
                                   now=self._clock.now())
        if not self._ephemeral.put_new(_key(pending.id), pending.to_json(), ttl=ttl):  # pragma: no cover
            raise RuntimeError("re-enrollment id collision")
        return {
            "rekey_id": pending.id,
            "public_key": {
                "challenge": _b64url(pending.auth_challenge), "rpId": self._binding.rp_id,
                "userVerification": "required", "allowCredentials": [],
                "timeout": int(ttl.total_seconds() * 1000),
            },
            "sign_options": pending.sign_options,
            "card_challenge": _b64url(pending.card_challenge),
            "expires_at": pending.expires_at.isoformat(),
        }

    def complete(
        self, rekey_id: str, *, assertion: dict[str, Any], sign_credential: RegistrationCredential, card: _Card,
    ) -> dict[str, Any]:
        """Verify, issue the new signature certificate and point the device at it.

        Raises ChallengeNotFound, ChallengeUsed, AssertionRejected, ApprovalReplayed, a
        VerificationRefused problem (attestation, card certificate, card signature) or
        CardNotTheHolders; then nothing changed but the counter.
        """
        raw = self._ephemeral.take(_key(rekey_id))
        if raw is None:
            if self._ephemeral.get(f"{_key(rekey_id)}:used") is not None:
                raise ChallengeUsed
            raise ChallengeNotFound
        self._ephemeral.put(f"{_key(rekey_id)}:used", b"1", ttl=self._settings.device.enrollment_ttl)
        pending = PendingEnrollment.from_json(raw)
        if self._clock.now() >= pending.expires_at:
            raise ChallengeNotFound
        verified = self._authenticate(assertion, pending.auth_challenge)
        try:
            sign = verify_attestation(sign_credential, challenge=pending.sign_challenge, rp_id=pending.rp_id,
                                      origin=pending.origin, roots=self._enrollments.trust.attestation_roots,
                                      subject="sign credential")
        except EnrollmentRejected as rejected:
            log.warning("signature_key.rejected reason=%s device=%s", rejected.reason.value, verified.device_id)
            raise problem_for(rejected) from None
        attributes = self._check_card(card)
        digest = binding_digest(challenge=pending.card_challenge, auth_public_key=self._auth_key(verified.device_id),
                                sign_public_key=sign.public_key)
        if not card_signed(card.sign, digest, card.sign_signature):
            log.warning("signature_key.rejected reason=card_signature_invalid device=%s", verified.device_id)
            raise CardSignatureRejected
        self._check_holder(verified, card)
        certificate = self._pki.issue_smartphone_certificate(
            profile=SMARTPHONE_SIGN, subject=smartphone_subject(), public_key=sign.public_key,
            card_certificates=[card.auth, card.sign], attributes=attributes,
        )
        try:
            old = self._switch(verified.device_id, sign.credential_id, sign.cose_public_key, certificate)
        except Exception:
            self._withdraw(certificate)
            raise
        with contextlib.suppress(AlreadyRevoked):  # a move, a hold or the card got there first: it stays
            self._pki.revoke(old, x509.ReasonFlags.superseded)
        log.info("signature_key.reenrolled device=%s", verified.device_id)
        return {"device_id": verified.device_id, "sign_certificate": _der_b64(certificate),
                "chain": [_der_b64(self._pki.authority.certificate)]}

    def _authenticate(self, assertion: dict[str, Any], challenge: bytes) -> VerifiedAssertion:
        raw_id = assertion.get("rawId")
        if not isinstance(raw_id, str):
            raise _rejected(Reason.MALFORMED)
        credential_id = _decode(raw_id, "assertion.rawId")
        device = self._devices.credential(credential_id, with_signature_certificate=False)
        if device is None:
            raise _rejected(Reason.UNKNOWN_CREDENTIAL)
        try:
            verified = verify_assertion(assertion=assertion, challenge=challenge, device=device,
                                        rp_id=self._binding.rp_id, origin=self._binding.origin, now=self._clock.now())
        except LoginRejected as rejected:
            raise _rejected(rejected.reason) from rejected
        if not self._devices.advance_sign_count(verified.device_id, verified.new_sign_count):
            raise ApprovalReplayed
        return verified

    def _check_card(self, card: _Card) -> basic_attributes.BasicAttributes:
        """Both card certificates good (revocation required) and meant for their key; the attributes."""
        now = self._clock.now()
        trust = self._enrollments.trust
        sources = self._enrollments.revocation.card_status(
            [card.auth, card.sign], policy=CardRevocationPolicy(self._settings.pki.card_revocation),
            crl_max_age=self._settings.pki.card_crl_max_age, now=now,
        )
        for certificate, purpose in ((card.auth, Purpose.CARD_AUTH), (card.sign, Purpose.CARD_SIGN)):
            try:
                validate_certificate(certificate, purpose=purpose, trust_roots=trust.jlis_roots,
                                     intermediates=trust.jlis_intermediates, crls=sources.crls,
                                     ocsp_responses=sources.ocsp_responses, now=now)
            except CertificateRejected as exc:
                log.warning("signature_key.rejected reason=card_certificate_%s", exc.reason.value)
                raise CardCertificateRejected from exc
        try:
            return basic_attributes.decode(card.sign)
        except basic_attributes.MalformedAttributes as exc:
            log.warning("signature_key.rejected reason=card_attributes_malformed")
            raise CardCertificateRejected from exc

    def _check_holder(self, verified: VerifiedAssertion, card: _Card) -> None:
        """Both card certificates must be the device holder's; new ones are looked up in the J-LIS links."""
        refs = [CertificateRef.of(card.auth), CertificateRef.of(card.sign)]
        holders = self._holders(refs)
        if len(holders) < len(refs):
            self._enrollments.follow_linking_data()
            holders = self._holders(refs)
        if set(holders.values()) != {verified.person_id} or len(holders) < len(refs):
            log.warning("signature_key.rejected reason=not_the_holders device=%s", verified.device_id)
            raise CardNotTheHolders

    def _holders(self, refs: Sequence[CertificateRef]) -> dict[tuple[bytes, str], str]:
        statement = select(PersonCardCertificate).where(or_(*(
            and_(PersonCardCertificate.issuer_key_id == ref.issuer_key_id,
                 PersonCardCertificate.serial == str(ref.serial_number))
            for ref in refs
        )))
        with self._sessions() as session:
            return {(row.issuer_key_id, row.serial): row.person_id for row in session.scalars(statement)}

    def _auth_key(self, device_id: str) -> ec.EllipticCurvePublicKey:
        """The device's authentication key, from its user-authentication certificate."""
        statement = (
            select(IssuedCertificate.der)
            .join(DeviceRecord, and_(IssuedCertificate.authority == SMARTPHONE_CA_NAME,
                                     IssuedCertificate.serial == DeviceRecord.auth_certificate_serial))
            .where(DeviceRecord.id == device_id)
        )
        with self._sessions() as session:
            der = session.scalar(statement)
        key = x509.load_der_x509_certificate(der).public_key() if der is not None else None
        if not isinstance(key, ec.EllipticCurvePublicKey):  # pragma: no cover - the portal issued it
            raise _rejected(Reason.UNKNOWN_CREDENTIAL)
        return key

    def _switch(self, device_id: str, credential_id: bytes, public_key: bytes, certificate: x509.Certificate) -> int:
        """Point the active device at the new key and certificate; return the old certificate's serial.

        A device revoked meanwhile keeps its row; the new certificate is revoked and the
        assertion is refused as if it had come a moment later.
        """
        now = self._clock.now()
        with self._sessions.begin() as session:
            old = session.scalar(select(DeviceRecord.sign_certificate_serial).where(
                DeviceRecord.id == device_id, DeviceRecord.status == DeviceStatus.ACTIVE.value,
            ).with_for_update())
            changed = old is not None and session.execute(update(DeviceRecord).where(
                DeviceRecord.id == device_id, DeviceRecord.sign_certificate_serial == old,
            ).values(sign_credential_id=credential_id, sign_public_key=public_key,
                     sign_certificate_serial=str(certificate.serial_number))).rowcount == 1  # type: ignore[attr-defined]
            if changed:
                append_in(session, AuditEvent.CERTIFICATE_ISSUED, at=now, actor=f"phone:{device_id}",
                          subject=[f"device:{device_id}",
                                   certificate_subject(SMARTPHONE_CA_NAME, certificate.serial_number)],
                          details={"profile": SMARTPHONE_SIGN.name})
        if not changed or old is None:
            raise _rejected(Reason.UNKNOWN_CREDENTIAL)
        return int(old)

    def _withdraw(self, certificate: x509.Certificate) -> None:
        """Revoke a new certificate the device never came to use: none must stay usable."""
        try:
            self._pki.revoke(certificate.serial_number, x509.ReasonFlags.cessation_of_operation)
        except Exception:  # best effort: the original error is what the caller must see
            log.exception("signature_key.withdraw_failed serial=%x", certificate.serial_number)


def _key(rekey_id: str) -> str:
    return f"signature-key:{rekey_id}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _rejected(reason: Reason) -> AssertionRejected:
    log.warning("signature_key.rejected reason=%s", reason.value)
    return AssertionRejected()


def _der_b64(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")


def _decode(value: str, name: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidDeviceRequest(f"{name} must be base64url") from exc


def _der_certificate(text: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))


def _member(container: dict[str, Any], name: str, kind: type) -> Any:
    value = container.get(name)
    if not isinstance(value, kind):
        raise InvalidDeviceRequest(f"{name} must be a JSON {'object' if kind is dict else 'string'}")
    return value


def _parse(body: object) -> tuple[dict[str, Any], RegistrationCredential, _Card]:
    """The assertion, the new key's registration and the card's part (unverified)."""
    if not isinstance(body, dict):
        raise InvalidDeviceRequest("send a JSON object with Content-Type: application/json")
    assertion, card = _member(body, "assertion", dict), _member(body, "card", dict)
    try:
        credential = parse_registration_credential_json(_member(body, "sign_credential", dict))
    except Exception as exc:  # py_webauthn lets any JSON or base64 error through
        raise InvalidDeviceRequest("sign_credential must be a RegistrationResponseJSON") from exc
    try:
        parsed = _Card(
            auth=_der_certificate(_member(card, "auth_certificate", str)),
            sign=_der_certificate(_member(card, "sign_certificate", str)),
            sign_signature=_decode(_member(card, "sign_signature", str), "card.sign_signature"),
        )
    except (binascii.Error, ValueError) as exc:
        raise InvalidDeviceRequest("card certificates must be base64 DER") from exc
    return assertion, credential, parsed


def create_blueprint(keys: SignatureKeys) -> Blueprint:
    """The signature-key re-enrollment endpoints of the device API."""
    blueprint = Blueprint("signature_keys", __name__, url_prefix="/device/v1/signature-keys")
    register_problem_handler(blueprint)

    @blueprint.post("")
    def start() -> tuple[Response, int]:
        return jsonify(keys.start()), 201

    @blueprint.post("/<rekey_id>")
    def complete(rekey_id: str) -> tuple[Response, int]:
        assertion, credential, card = _parse(request.get_json(silent=True))
        return jsonify(keys.complete(rekey_id, assertion=assertion, sign_credential=credential, card=card)), 201

    return blueprint
