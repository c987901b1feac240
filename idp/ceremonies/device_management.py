"""Device API: a phone lists its smartphone certificates and revokes itself (``/device/v1/devices``).

``POST /device/v1/devices/challenges``  → 201 {challenge_id, public_key: WebAuthn request options}
``POST /device/v1/devices/self/certificates``  {"challenge_id", "assertion"} → 200 the device's certificates
``POST /device/v1/devices/self/revoke``  {"challenge_id", "assertion", "reason"?} → 200 {"status": "revoked"}

"Self" is the device whose authentication key made the assertion (its ``rawId``): a challenge
is not bound to a device, so any enrolled phone can use one, and only ever about itself. The
assertion is checked by ``verify_assertion``, the same pure step as a login approval, including
the counter that must go up; so a device whose user-authentication certificate is revoked or on
hold, or a revoked device, cannot authenticate here either (403 ``assertion-rejected``). A
challenge is taken from the ephemeral store atomically, once, whether the assertion passes or not.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from flask import Blueprint, Response, jsonify, request
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from idp.audit import AuditEvent, append_in
from idp.ceremonies.approval import ApprovalSettings
from idp.ceremonies.device_transactions import ApprovalReplayed, AssertionRejected
from idp.ceremonies.devices import SqlDeviceDirectory
from idp.ceremonies.login import LoginRejected, Reason, VerifiedAssertion, verify_assertion
from idp.ceremonies.problems import DeviceProblem, InvalidDeviceRequest, ServiceUnavailable
from idp.ceremonies.records import DeviceRecord, DeviceStatus
from idp.clock import Clock
from idp.pki.records import IssuedCertificate
from idp.pki.registry import AlreadyRevoked
from idp.pki.service import SMARTPHONE_CA_NAME, PortalPki
from idp.store.ephemeral import EphemeralStore
from idp.web.problems import PROBLEM_BASE, register_problem_handler

__all__ = [
    "CHALLENGE_TTL",
    "DEVICE_MANAGEMENT_EXTENSION",
    "REVOCATION_REASONS",
    "ChallengeNotFound",
    "ChallengeUsed",
    "DeviceManagement",
    "create_blueprint",
]

DEVICE_MANAGEMENT_EXTENSION = "myna.device_management"
"""Where the app keeps its instance (``app.extensions``)."""

log = logging.getLogger("idp.ceremonies")

CHALLENGE_TTL = timedelta(minutes=2)
"""How long a device-management challenge waits for its assertion."""
_USED_FOR = timedelta(minutes=10)
"""How long a used challenge is remembered, to answer 409 rather than 404."""
REVOCATION_REASONS = {
    reason.value: reason
    for reason in (x509.ReasonFlags.superseded, x509.ReasonFlags.key_compromise,
                   x509.ReasonFlags.cessation_of_operation)
}
"""The RFC 5280 §5.3.1 reasons a phone may give for revoking itself."""


class ChallengeNotFound(DeviceProblem):
    """No live challenge has that id (never issued, or expired)."""

    type = f"{PROBLEM_BASE}device-challenge-not-found"
    title = "There is no such challenge; request a new one"
    status = 404


class ChallengeUsed(DeviceProblem):
    """The challenge was used before: each answers one request. Request a new one."""

    type = f"{PROBLEM_BASE}device-challenge-used"
    title = "This challenge was already used"
    status = 409


@dataclass(frozen=True, slots=True, kw_only=True)
class _Certificate:
    kind: str
    row: IssuedCertificate


class DeviceManagement:
    """Challenges, and the authenticated device's certificates and revocation."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        ephemeral: EphemeralStore,
        pki: PortalPki,
        binding: ApprovalSettings,
        clock: Clock,
        revoke_grants: Callable[[str], object],
    ) -> None:
        """``revoke_grants(device_id)`` revokes the OAuth grants issued on the device (``idp.oidc``)."""
        self._sessions = sessions
        self._devices = SqlDeviceDirectory(sessions)
        self._ephemeral = ephemeral
        self._pki = pki
        self._binding = binding
        self._clock = clock
        self._revoke_grants = revoke_grants

    def __repr__(self) -> str:
        return f"DeviceManagement(rp_id={self._binding.rp_id!r})"

    def new_challenge(self) -> dict[str, Any]:
        """A one-time challenge and the WebAuthn request options to sign it with (WebAuthn L3 §5.5)."""
        challenge_id, challenge = secrets.token_urlsafe(24), secrets.token_bytes(32)
        if not self._ephemeral.put_new(_key(challenge_id), challenge, ttl=CHALLENGE_TTL):  # pragma: no cover
            raise ServiceUnavailable
        return {
            "challenge_id": challenge_id,
            "expires_at": (self._clock.now() + CHALLENGE_TTL).isoformat(),
            "public_key": {
                "challenge": base64.urlsafe_b64encode(challenge).rstrip(b"=").decode(),
                "rpId": self._binding.rp_id,
                "userVerification": "required",
                "allowCredentials": [],
                "timeout": int(CHALLENGE_TTL.total_seconds() * 1000),
            },
        }

    def authenticate(self, challenge_id: str, assertion: dict[str, Any]) -> VerifiedAssertion:
        """Take the challenge (once) and verify the assertion over it; advance the device's counter.

        Raises ChallengeNotFound, ChallengeUsed, AssertionRejected or ApprovalReplayed.
        """
        key = _key(challenge_id)
        challenge = self._ephemeral.take(key)
        if challenge is None:
            if self._ephemeral.get(f"{key}:used") is not None:
                raise ChallengeUsed
            raise ChallengeNotFound
        self._ephemeral.put(f"{key}:used", b"1", ttl=_USED_FOR)
        device = self._devices.credential(_credential_id(assertion, challenge_id), with_signature_certificate=False)
        if device is None:
            raise _rejected(Reason.UNKNOWN_CREDENTIAL, challenge_id)
        try:
            verified = verify_assertion(assertion=assertion, challenge=challenge, device=device,
                                        rp_id=self._binding.rp_id, origin=self._binding.origin, now=self._clock.now())
        except LoginRejected as rejected:
            raise _rejected(rejected.reason, challenge_id) from rejected
        if not self._devices.advance_sign_count(verified.device_id, verified.new_sign_count):
            raise ApprovalReplayed
        return verified

    def certificates(self, verified: VerifiedAssertion) -> dict[str, Any]:
        """The device and both of its smartphone certificates, as the phone sees them."""
        device, certificates = self._load(verified.device_id)
        return {
            "device_id": device.id,
            "status": device.status,
            "certificates": [_certificate_view(item) for item in certificates],
        }

    def revoke(self, verified: VerifiedAssertion, reason: x509.ReasonFlags) -> None:
        """The phone's self-revocation: ``revoke_device`` for the phone that made the assertion."""
        self.revoke_device(verified.device_id, reason, actor=f"phone:{verified.device_id}")

    def revoke_device(self, device_id: str, reason: x509.ReasonFlags, *, actor: str) -> None:
        """Revoke both smartphone certificates (the CRL is republished each time), the device,
        then the grants issued on it (refresh and access tokens). ``actor`` is the audit actor:
        the phone itself, or the person from their account page.

        The certificates go first: they are what relying parties check, and once the
        user-authentication certificate is revoked the device cannot authenticate again anyway.
        A certificate already revoked (a card revocation got there first) stays as it is.
        """
        _, certificates = self._load(device_id)
        for item in certificates:
            try:
                self._pki.revoke(int(item.row.serial), reason)
            except AlreadyRevoked:
                log.info("device.certificate_already_revoked device=%s serial=%s", device_id, item.row.serial)
        statement = (
            update(DeviceRecord)
            .where(DeviceRecord.id == device_id, DeviceRecord.status == DeviceStatus.ACTIVE.value)
            .values(status=DeviceStatus.REVOKED.value, revoked_at=self._clock.now())
        )
        with self._sessions.begin() as session:
            changed = session.execute(statement).rowcount == 1  # type: ignore[attr-defined] # a CursorResult
            if changed:
                append_in(
                    session, AuditEvent.DEVICE_REVOKED, at=self._clock.now(), actor=actor,
                    subject=f"device:{device_id}", details={"reason": reason.value},
                )
        log.info("device.revoked device=%s reason=%s changed=%s", device_id, reason.value, changed)
        self._revoke_grants(device_id)

    def _load(self, device_id: str) -> tuple[DeviceRecord, tuple[_Certificate, _Certificate]]:
        auth = aliased(IssuedCertificate)
        sign = aliased(IssuedCertificate)
        statement = (
            select(DeviceRecord, auth, sign)
            .join(auth, and_(auth.authority == SMARTPHONE_CA_NAME, auth.serial == DeviceRecord.auth_certificate_serial))
            .join(sign, and_(sign.authority == SMARTPHONE_CA_NAME, sign.serial == DeviceRecord.sign_certificate_serial))
            .where(DeviceRecord.id == device_id)
        )
        with self._sessions() as session:
            device, auth_row, sign_row = session.execute(statement).one()
            session.expunge_all()
        return device, (_Certificate(kind="auth", row=auth_row), _Certificate(kind="sign", row=sign_row))


def _key(challenge_id: str) -> str:
    return f"device-challenge:{challenge_id}"


def _credential_id(assertion: dict[str, Any], challenge_id: str) -> bytes:
    raw = assertion.get("rawId")
    if not isinstance(raw, str):
        raise _rejected(Reason.MALFORMED, challenge_id)
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _rejected(Reason.MALFORMED, challenge_id) from exc


def _rejected(reason: Reason, challenge_id: str) -> AssertionRejected:
    """Log the private reason once and return the public problem to raise."""
    log.warning("device.rejected reason=%s challenge=%s", reason.value, challenge_id)
    return AssertionRejected()


def _certificate_view(item: _Certificate) -> dict[str, Any]:
    row = item.row
    return {
        "kind": item.kind,
        "serial": f"{int(row.serial):x}",
        "status": row.state,
        "reason": row.reason,
        "not_after": _utc(row.not_after).isoformat(),
        "certificate": base64.b64encode(row.der).decode("ascii"),
    }


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _body() -> tuple[str, dict[str, Any], dict[str, Any]]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidDeviceRequest("send a JSON object with Content-Type: application/json")
    challenge_id = body.get("challenge_id")
    if not isinstance(challenge_id, str) or not challenge_id or len(challenge_id) > 128:  # noqa: PLR2004
        raise InvalidDeviceRequest("challenge_id must be a non-empty string")
    assertion = body.get("assertion")
    if not isinstance(assertion, dict):
        raise InvalidDeviceRequest("assertion must be a WebAuthn AuthenticationResponseJSON object")
    return challenge_id, assertion, body


def create_blueprint(management: DeviceManagement) -> Blueprint:
    """The device-management endpoints of the device API."""
    blueprint = Blueprint("device_management", __name__, url_prefix="/device/v1/devices")
    register_problem_handler(blueprint)

    @blueprint.post("/challenges")
    def new_challenge() -> tuple[Response, int]:
        return jsonify(management.new_challenge()), 201

    @blueprint.post("/self/certificates")
    def certificates() -> Response:
        challenge_id, assertion, _ = _body()
        return jsonify(management.certificates(management.authenticate(challenge_id, assertion)))

    @blueprint.post("/self/revoke")
    def revoke() -> Response:
        challenge_id, assertion, body = _body()
        reason_text = body.get("reason", x509.ReasonFlags.cessation_of_operation.value)
        reason = REVOCATION_REASONS.get(reason_text) if isinstance(reason_text, str) else None
        if reason is None:
            raise InvalidDeviceRequest(f"reason must be one of {', '.join(REVOCATION_REASONS)}")
        management.revoke(management.authenticate(challenge_id, assertion), reason)
        return jsonify({"status": "revoked"})

    return blueprint
