"""The login ceremony's verification step: the phone's WebAuthn assertion and consent signature.

``verify_login`` checks an assertion made by the SE's authentication key (WebAuthn L3 §7.2
data formats) for one login transaction, in the spec's order with one reason per check, then
the smartphone certificate's status, then (when the RP asked for identity attributes) the
signature key's signature over the consent. It is pure: the caller loads the transaction, the
device and the certificate statuses, and stores the result.

The client data, challenge, origin, RP ID, flags and counter are checked here first, each with
its own reason (py_webauthn reports them all as one exception type); py_webauthn then checks
the signature itself, as the one library that implements WebAuthn assertion verification.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from webauthn import verify_authentication_response
from webauthn.helpers import parse_authenticator_data, parse_client_data_json
from webauthn.helpers.exceptions import WebAuthnException

from idp.ceremonies.transactions import LoginTransaction
from idp.pki.registry import CertificateState, CertificateStatus

__all__ = [
    "DeviceCredential",
    "LoginRejected",
    "Reason",
    "VerifiedAssertion",
    "VerifiedLogin",
    "consent_digest",
    "verify_assertion",
    "verify_login",
]


class Reason(enum.Enum):
    """Why a login assertion was refused; logged, never sent to the phone beyond its class."""

    MALFORMED = "malformed"
    UNKNOWN_CREDENTIAL = "unknown_credential"
    """No active device has this credential (never enrolled, or revoked)."""
    WRONG_TYPE = "wrong_type"
    CHALLENGE_MISMATCH = "challenge_mismatch"
    ORIGIN_MISMATCH = "origin_mismatch"
    RP_ID_MISMATCH = "rp_id_mismatch"
    USER_NOT_PRESENT = "user_not_present"
    USER_NOT_VERIFIED = "user_not_verified"
    SIGN_COUNT_NOT_INCREASED = "sign_count_not_increased"
    BAD_SIGNATURE = "bad_signature"
    CERTIFICATE_REVOKED = "certificate_revoked"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CONSENT_SIGNATURE_MISSING = "consent_signature_missing"
    CONSENT_SIGNATURE_INVALID = "consent_signature_invalid"


class LoginRejected(Exception):
    """The assertion or the consent was not accepted."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceCredential:
    """What the portal stored of a phone at enrollment, as the login check needs it."""

    device_id: str
    person_id: str
    credential_id: bytes
    public_key: bytes
    """The authentication key, COSE-encoded, as py_webauthn returned it at registration."""
    sign_count: int
    auth_certificate: CertificateStatus
    sign_certificate: x509.Certificate | None
    sign_certificate_status: CertificateStatus | None


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedAssertion:
    """A good assertion by an active device's authentication key: only ``verify_assertion`` builds one."""

    device_id: str
    person_id: str
    new_sign_count: int
    authenticated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedLogin:
    """A login the portal may turn into a session: only ``verify_login`` builds one."""

    person_id: str
    device_id: str
    new_sign_count: int
    consented_attributes: tuple[str, ...]
    signature_certificate_serial: int | None
    authenticated_at: datetime


def consent_digest(*, transaction: LoginTransaction, attributes: tuple[str, ...]) -> bytes:
    """The SHA-256 digest the SE's signature key signs to consent to releasing ``attributes``.

    SHA-256 over the canonical JSON (sorted keys, no spaces) of ``{"attributes": [...sorted],
    "challenge": <base64url>, "client_id": ..., "purpose": "myna-consent-v1", "transaction":
    <id>}``: bound to this transaction, this RP and this exact list (``docs/device-api.md``).
    """
    document = {
        "attributes": sorted(attributes),
        "challenge": base64.urlsafe_b64encode(transaction.challenge).rstrip(b"=").decode(),
        "client_id": transaction.request.client_id,
        "purpose": "myna-consent-v1",
        "transaction": transaction.id,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).digest()


def verify_login(
    *,
    transaction: LoginTransaction,
    assertion: dict[str, Any],
    device: DeviceCredential,
    consent_signature: bytes | None,
    rp_id: str,
    origin: str,
    now: datetime,
) -> VerifiedLogin:
    """Check the phone's approval of ``transaction``. Raises LoginRejected carrying a Reason."""
    verified = verify_assertion(assertion=assertion, challenge=transaction.challenge, device=device,
                                rp_id=rp_id, origin=origin, now=now)
    consented = transaction.request.requested_attributes
    if consented:
        _check_consent(transaction, device, consent_signature, now)
    return VerifiedLogin(
        person_id=device.person_id,
        device_id=device.device_id,
        new_sign_count=verified.new_sign_count,
        consented_attributes=consented,
        signature_certificate_serial=(device.sign_certificate_status.serial_number
                                      if consented and device.sign_certificate_status else None),
        authenticated_at=now,
    )


def verify_assertion(
    *,
    assertion: dict[str, Any],
    challenge: bytes,
    device: DeviceCredential,
    rp_id: str,
    origin: str,
    now: datetime,
) -> VerifiedAssertion:
    """Check an assertion by the device's authentication key over ``challenge`` (WebAuthn L3 §7.2),
    then that its user-authentication certificate is good now. Raises LoginRejected carrying a Reason.

    The part of ``verify_login`` that every phone-authenticated request shares (login approval,
    device management); the caller stores ``new_sign_count`` with a conditional update.
    """
    client_data, authenticator_data = _parse(assertion)
    if client_data.type != "webauthn.get":  # §7.2 step 11
        raise LoginRejected(Reason.WRONG_TYPE)
    if not hmac.compare_digest(client_data.challenge, challenge):  # step 12
        raise LoginRejected(Reason.CHALLENGE_MISMATCH)
    if client_data.origin != origin:  # step 13
        raise LoginRejected(Reason.ORIGIN_MISMATCH)
    if not hmac.compare_digest(authenticator_data.rp_id_hash, hashlib.sha256(rp_id.encode()).digest()):  # 15
        raise LoginRejected(Reason.RP_ID_MISMATCH)
    if not authenticator_data.flags.up:  # step 16
        raise LoginRejected(Reason.USER_NOT_PRESENT)
    if not authenticator_data.flags.uv:  # step 17: we always require user verification
        raise LoginRejected(Reason.USER_NOT_VERIFIED)
    if device.sign_count and authenticator_data.sign_count <= device.sign_count:  # step 22: a cloned SE
        raise LoginRejected(Reason.SIGN_COUNT_NOT_INCREASED)
    try:
        verify_authentication_response(
            credential=assertion,
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=origin,
            credential_public_key=device.public_key,
            credential_current_sign_count=device.sign_count,
            require_user_verification=True,
        )
    except WebAuthnException as exc:  # step 21, the only check left to it
        raise LoginRejected(Reason.BAD_SIGNATURE) from exc
    _check_certificate(device.auth_certificate, now)
    return VerifiedAssertion(device_id=device.device_id, person_id=device.person_id,
                             new_sign_count=authenticator_data.sign_count, authenticated_at=now)


def _parse(assertion: dict[str, Any]) -> tuple[Any, Any]:
    """The client data and authenticator data of an AuthenticationResponseJSON (unverified)."""
    try:
        response = assertion["response"]
        client_data = parse_client_data_json(_b64url(response["clientDataJSON"]))
        authenticator_data = parse_authenticator_data(_b64url(response["authenticatorData"]))
    except (KeyError, TypeError, ValueError, WebAuthnException) as exc:
        raise LoginRejected(Reason.MALFORMED) from exc
    return client_data, authenticator_data


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_certificate(status: CertificateStatus, now: datetime) -> None:
    if status.state is not CertificateState.GOOD:
        raise LoginRejected(Reason.CERTIFICATE_REVOKED)
    if now >= status.not_after:
        raise LoginRejected(Reason.CERTIFICATE_EXPIRED)


def _check_consent(
    transaction: LoginTransaction,
    device: DeviceCredential,
    signature: bytes | None,
    now: datetime,
) -> None:
    if signature is None or device.sign_certificate is None or device.sign_certificate_status is None:
        raise LoginRejected(Reason.CONSENT_SIGNATURE_MISSING)
    _check_certificate(device.sign_certificate_status, now)
    public_key = device.sign_certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise LoginRejected(Reason.CONSENT_SIGNATURE_INVALID)
    digest = consent_digest(transaction=transaction, attributes=transaction.request.requested_attributes)
    try:
        public_key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature as exc:
        raise LoginRejected(Reason.CONSENT_SIGNATURE_INVALID) from exc
