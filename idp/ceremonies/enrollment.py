"""Enrollment: the phone's SE makes two attested keys, the card vouches for both (WebAuthn L3 §7.1).

``start_enrollment`` makes a ``PendingEnrollment``: WebAuthn creation options for the
authentication key and for the signature key, and a challenge for the card. The phone answers
with two ``packed`` attestations and, from the My Number Card, both card certificates and two
RSASSA-PKCS1-v1_5 signatures over the binding digest (``binding_digest``)::

    SHA-256("myna-enrollment-v1" || card_challenge || SHA-256(auth SPKI) || SHA-256(sign SPKI))

``verify_enrollment`` checks all of it, in order, and returns a ``VerifiedEnrollment``: the only
value from which ``idp.ceremonies.enrollment_service`` issues smartphone certificates. It reads
and writes no storage; the caller passes the pending enrollment, the trust anchors, the
revocation information it holds and the time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from webauthn import generate_registration_options, options_to_json
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorAttachment,
    AuthenticatorSelectionCriteria,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from idp.ceremonies.attestation import ES256, VerifiedCredential, verify_attestation
from idp.ceremonies.enrollment_errors import EnrollmentRejected, Reason
from idp.pki import attributes as basic_attributes
from idp.pki.validation import (
    CertificateRejected,
    Purpose,
    RejectionReason,
    ValidatedCertificate,
    validate_certificate,
)

__all__ = [
    "BINDING_LABEL",
    "EnrollmentRejected",
    "EnrollmentTrust",
    "PendingEnrollment",
    "Reason",
    "RevocationInfo",
    "VerifiedCredential",
    "VerifiedEnrollment",
    "binding_digest",
    "start_enrollment",
    "verify_enrollment",
]

BINDING_LABEL = b"myna-enrollment-v1"
"""Domain separation of the card-binding digest: no other signature by a card key can be replayed here."""
CHALLENGE_BYTES = 32
RP_NAME = "Myna Gateway"

_CARD_REASONS = {
    RejectionReason.UNTRUSTED: Reason.CARD_CERTIFICATE_UNTRUSTED,
    RejectionReason.REVOKED: Reason.CARD_CERTIFICATE_REVOKED,
    RejectionReason.EXPIRED: Reason.CARD_CERTIFICATE_EXPIRED,
    RejectionReason.NOT_YET_VALID: Reason.CARD_CERTIFICATE_NOT_YET_VALID,
    RejectionReason.WRONG_PURPOSE: Reason.CARD_CERTIFICATE_WRONG_PURPOSE,
    RejectionReason.REVOCATION_UNAVAILABLE: Reason.CARD_REVOCATION_UNAVAILABLE,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingEnrollment:
    """A started enrollment, kept in the ephemeral store under ``key`` until the phone completes it."""

    id: str
    rp_id: str
    origin: str
    auth_options: dict[str, Any]
    """PublicKeyCredentialCreationOptionsJSON for the authentication key."""
    sign_options: dict[str, Any]
    """PublicKeyCredentialCreationOptionsJSON for the signature key."""
    auth_challenge: bytes
    sign_challenge: bytes
    card_challenge: bytes
    """What the card's two keys sign, inside the binding digest."""
    created_at: datetime
    expires_at: datetime

    @property
    def key(self) -> str:
        """The one-time key in the ephemeral store."""
        return f"enrollment:{self.id}"

    def to_json(self) -> bytes:
        """Serialise for the ephemeral store."""
        data = {
            "id": self.id, "rp_id": self.rp_id, "origin": self.origin,
            "auth_options": self.auth_options, "sign_options": self.sign_options,
            "auth_challenge": _b64(self.auth_challenge), "sign_challenge": _b64(self.sign_challenge),
            "card_challenge": _b64(self.card_challenge),
            "created_at": self.created_at.isoformat(), "expires_at": self.expires_at.isoformat(),
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> PendingEnrollment:
        """The inverse of ``to_json``."""
        data = json.loads(raw)
        for name in ("auth_challenge", "sign_challenge", "card_challenge"):
            data[name] = base64.urlsafe_b64decode(data[name] + "=" * (-len(data[name]) % 4))
        for name in ("created_at", "expires_at"):
            data[name] = datetime.fromisoformat(data[name])
        return cls(**data)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentTrust:
    """The anchors an enrollment is judged by (``pki.attestation_roots``, ``pki.jlis_*``)."""

    attestation_roots: tuple[x509.Certificate, ...]
    jlis_roots: tuple[x509.Certificate, ...]
    jlis_intermediates: tuple[x509.Certificate, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationInfo:
    """What the portal holds about the card certificates' status: cached CRLs, live OCSP answers (DER)."""

    crls: tuple[bytes, ...] = ()
    ocsp_responses: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedEnrollment:
    """An enrollment that passed ``verify_enrollment``; only that function builds one."""

    auth: VerifiedCredential
    sign: VerifiedCredential
    card_auth: ValidatedCertificate
    card_sign: ValidatedCertificate
    attributes: basic_attributes.BasicAttributes
    """The four attributes of the card's signature certificate, for the smartphone signature certificate."""


def start_enrollment(*, rp_id: str, origin: str, ttl: timedelta, now: datetime) -> PendingEnrollment:
    """Open an enrollment: creation options for both SE keys and the card challenge.

    Options ask for ES256 only, a platform authenticator, user verification required, no
    discoverable credential, and ``direct`` attestation, since only an attested SE is accepted.
    """
    user_id = secrets.token_bytes(16)
    challenges = [secrets.token_bytes(CHALLENGE_BYTES) for _ in range(3)]
    options = [
        json.loads(options_to_json(generate_registration_options(
            rp_id=rp_id,
            rp_name=RP_NAME,
            user_name=f"myna-{purpose}",
            user_id=user_id,
            user_display_name=f"My Number Card ({purpose} key)",
            challenge=challenge,
            attestation=AttestationConveyancePreference.DIRECT,
            authenticator_selection=AuthenticatorSelectionCriteria(
                authenticator_attachment=AuthenticatorAttachment.PLATFORM,
                resident_key=ResidentKeyRequirement.DISCOURAGED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            supported_pub_key_algs=[ES256],
        )))
        for purpose, challenge in (("auth", challenges[0]), ("sign", challenges[1]))
    ]
    created_at = now.astimezone(UTC)
    return PendingEnrollment(
        id=secrets.token_urlsafe(16),
        rp_id=rp_id,
        origin=origin,
        auth_options=options[0],
        sign_options=options[1],
        auth_challenge=challenges[0],
        sign_challenge=challenges[1],
        card_challenge=challenges[2],
        created_at=created_at,
        expires_at=created_at + ttl,
    )


def binding_digest(
    *, challenge: bytes, auth_public_key: ec.EllipticCurvePublicKey, sign_public_key: ec.EllipticCurvePublicKey,
) -> bytes:
    """SHA-256("myna-enrollment-v1" || challenge || SHA-256(auth SPKI DER) || SHA-256(sign SPKI DER))."""
    return hashlib.sha256(
        BINDING_LABEL + challenge + _spki_digest(auth_public_key) + _spki_digest(sign_public_key),
    ).digest()


def verify_enrollment(
    *,
    pending: PendingEnrollment,
    auth_attestation: RegistrationCredential,
    sign_attestation: RegistrationCredential,
    card_auth_certificate: x509.Certificate,
    card_sign_certificate: x509.Certificate,
    card_auth_signature: bytes,
    card_sign_signature: bytes,
    trust: EnrollmentTrust,
    revocation: RevocationInfo,
    now: datetime,
) -> VerifiedEnrollment:
    """Check a completed enrollment; raises EnrollmentRejected carrying a Reason.

    In order: each attestation (WebAuthn L3 §7.1 and §8.2, refusing what py_webauthn would let
    through), then the two card certificates (RFC 5280 path to a J-LIS root, revocation
    required), their attributes, both card signatures over the binding digest, and that the two
    card certificates belong together. Reads and writes no storage. py_webauthn judges the
    attestation chain's validity period by the system clock.
    """
    auth = verify_attestation(
        auth_attestation, challenge=pending.auth_challenge, rp_id=pending.rp_id, origin=pending.origin,
        roots=trust.attestation_roots, subject="auth credential",
    )
    sign = verify_attestation(
        sign_attestation, challenge=pending.sign_challenge, rp_id=pending.rp_id, origin=pending.origin,
        roots=trust.attestation_roots, subject="sign credential",
    )
    # Two keys, two purposes: one key registered twice would let a login key sign documents.
    if auth.credential_id == sign.credential_id or auth.public_key == sign.public_key:
        raise EnrollmentRejected(Reason.SAME_KEY_TWICE, "sign credential")
    card_auth = _validate_card(
        card_auth_certificate, purpose=Purpose.CARD_AUTH, trust=trust, revocation=revocation, now=now,
    )
    card_sign = _validate_card(
        card_sign_certificate, purpose=Purpose.CARD_SIGN, trust=trust, revocation=revocation, now=now,
    )
    try:
        attributes = basic_attributes.decode(card_sign_certificate)
    except basic_attributes.MalformedAttributes as exc:
        raise EnrollmentRejected(Reason.CARD_ATTRIBUTES_MALFORMED, "card sign certificate", str(exc)) from exc
    digest = binding_digest(
        challenge=pending.card_challenge, auth_public_key=auth.public_key, sign_public_key=sign.public_key,
    )
    if not _card_signed(card_auth_certificate, digest, card_auth_signature):
        raise EnrollmentRejected(Reason.CARD_SIGNATURE_INVALID, "card auth signature")
    if not _card_signed(card_sign_certificate, digest, card_sign_signature):
        raise EnrollmentRejected(Reason.CARD_SIGNATURE_INVALID, "card sign signature")
    # Same card, same issuance: JPKI caps the signature certificate at the user-authentication
    # one, so both end together; J-LIS linking data (a later issue) makes this exact.
    if card_sign_certificate.not_valid_after_utc != card_auth_certificate.not_valid_after_utc:
        raise EnrollmentRejected(Reason.CARD_CERTIFICATES_UNRELATED, "card certificates")
    if card_auth.path[0] != card_sign.path[0]:
        raise EnrollmentRejected(Reason.CARD_CERTIFICATES_UNRELATED, "card certificates", "different J-LIS roots")
    return VerifiedEnrollment(auth=auth, sign=sign, card_auth=card_auth, card_sign=card_sign, attributes=attributes)


def _validate_card(
    certificate: x509.Certificate,
    *,
    purpose: Purpose,
    trust: EnrollmentTrust,
    revocation: RevocationInfo,
    now: datetime,
) -> ValidatedCertificate:
    subject = f"card {'auth' if purpose is Purpose.CARD_AUTH else 'sign'} certificate"
    try:
        return validate_certificate(
            certificate,
            purpose=purpose,
            trust_roots=trust.jlis_roots,
            intermediates=trust.jlis_intermediates,
            crls=revocation.crls,
            ocsp_responses=revocation.ocsp_responses,
            now=now,
        )
    except CertificateRejected as exc:
        raise EnrollmentRejected(_CARD_REASONS[exc.reason], subject, exc.detail) from exc


def _card_signed(certificate: x509.Certificate, digest: bytes, signature: bytes) -> bool:
    """Whether the card key of ``certificate`` signed ``digest`` (RSASSA-PKCS1-v1_5, SHA-256)."""
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    try:
        public_key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _spki_digest(public_key: ec.EllipticCurvePublicKey) -> bytes:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
