"""The account page's phone: what it shows of the person's phones, and suspending or revoking one.

The listing reads the person's devices with their two smartphone certificates (purpose, issue and
expiry dates, status and RFC 5280 reason). It never carries a certificate serial: a serial is not
an identifier that leaves the portal.

The actions reuse the device services, so a phone suspended or revoked here is exactly one
suspended with ``idp phones suspend`` (``PhoneLife.suspend``: both certificates on hold, its grants
revoked) or one that revoked itself (``DeviceManagement.revoke``: both certificates and the device
revoked, then its grants). Both act on the portal session's own phone only, never on a device id
the browser names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cryptography import x509
from flask import current_app
from sqlalchemy import and_, select
from sqlalchemy.orm import aliased

from idp.ceremonies.device_management import DEVICE_MANAGEMENT_EXTENSION, DeviceManagement
from idp.ceremonies.phone_life import PHONE_LIFE_EXTENSION, PhoneLife
from idp.ceremonies.records import DeviceRecord, DeviceStatus
from idp.pki.records import IssuedCertificate
from idp.pki.registry import CertificateState
from idp.pki.service import SMARTPHONE_CA_NAME
from idp.web.session import certificate_good

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from idp.app import Services
    from idp.web.session import PortalSession

__all__ = [
    "REVOCATION_REASONS",
    "CertificateView",
    "PhoneState",
    "PhoneView",
    "phones_of",
    "revoke_phone",
    "session_phone_stands",
    "suspend_phone",
]

REVOCATION_REASONS = {
    reason.value: reason for reason in (x509.ReasonFlags.cessation_of_operation, x509.ReasonFlags.key_compromise)
}
"""What the person may give for revoking their phone here (RFC 5280 §5.3.1): no longer used, or lost
or stolen. Both are among the reasons a phone may give for revoking itself."""


class PhoneState(enum.StrEnum):
    """Where a phone stands, as the page names it."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    """Active, its user-authentication certificate on hold (``idp phones suspend`` or the card)."""
    REVOKED = "revoked"
    """The device is revoked, or its user-authentication certificate is revoked for good."""
    EXPIRED = "expired"
    """Active, but its user-authentication certificate has expired: it cannot log in until re-enrolled."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateView:
    """One smartphone certificate as its holder sees it: no serial, no key, no attribute."""

    purpose: str
    """``auth`` (user authentication) or ``sign`` (signature)."""
    issued: datetime
    expires: datetime
    status: str
    """``good``, ``on_hold``, ``revoked`` or ``expired`` (good, but past its end)."""
    reason: str | None
    """The RFC 5280 reason name while on hold or revoked (``certificateHold``, ``superseded``, ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneView:
    """One of the person's phones, newest first on the page."""

    device_id: str
    enrolled_at: datetime
    state: PhoneState
    certificates: tuple[CertificateView, CertificateView]


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _certificate(purpose: str, row: IssuedCertificate, now: datetime) -> CertificateView:
    status = row.state
    if status == CertificateState.GOOD.value and now >= _utc(row.not_after):
        status = "expired"
    return CertificateView(purpose=purpose, issued=_utc(row.not_before), expires=_utc(row.not_after), status=status,
                           reason=row.reason)


def phones_of(sessions: sessionmaker[Session], person_id: str, *, now: datetime) -> list[PhoneView]:
    """The person's phones with both of their smartphone certificates, newest first."""
    auth = aliased(IssuedCertificate)
    sign = aliased(IssuedCertificate)
    statement = (
        select(DeviceRecord.id, DeviceRecord.status, DeviceRecord.created_at, auth, sign)
        .join(auth, and_(auth.authority == SMARTPHONE_CA_NAME, auth.serial == DeviceRecord.auth_certificate_serial))
        .join(sign, and_(sign.authority == SMARTPHONE_CA_NAME, sign.serial == DeviceRecord.sign_certificate_serial))
        .where(DeviceRecord.person_id == person_id)
        .order_by(DeviceRecord.created_at.desc(), DeviceRecord.id)
    )
    phones = []
    with sessions() as session:
        for device_id, device_status, created_at, auth_row, sign_row in session.execute(statement):
            if device_status == DeviceStatus.REVOKED.value or auth_row.state == CertificateState.REVOKED.value:
                state = PhoneState.REVOKED
            elif auth_row.state == CertificateState.ON_HOLD.value:
                state = PhoneState.SUSPENDED
            elif now >= _utc(auth_row.not_after):
                state = PhoneState.EXPIRED
            else:
                state = PhoneState.ACTIVE
            phones.append(PhoneView(
                device_id=device_id, enrolled_at=_utc(created_at), state=state,
                certificates=(_certificate("auth", auth_row, now), _certificate("sign", sign_row, now)),
            ))
    return phones


def session_phone_stands(services: Services, session: PortalSession) -> bool:
    """Whether the phone that made the session could log in now: active, the person's, and its
    user-authentication certificate good and unexpired (what a login approval checks, SQL, no cache).

    The signature certificate is not asked for: a found phone, resumed, logs in while it enrolls a
    new signature key, and its person may use this page meanwhile.
    """
    device = services.oidc.devices.active_device(session.device_id)
    return (device is not None and device.person_id == session.person_id
            and certificate_good(device.auth_certificate, services.clock.now()))


def suspend_phone(session: PortalSession) -> None:
    """``idp phones suspend`` for the session's phone, by its person: both certificates on hold, the
    grants issued on it revoked, audited with actor ``person:<id>``.

    Raises UnknownPhone or PhoneNotActive (``idp.ceremonies.phone_life``).
    """
    life: PhoneLife = current_app.extensions[PHONE_LIFE_EXTENSION]
    life.suspend(session.device_id, actor=f"person:{session.person_id}")


def revoke_phone(session: PortalSession, reason: x509.ReasonFlags) -> None:
    """The phone's revocation as its own self-revocation does it (``DeviceManagement.revoke_device``):
    both certificates and the device revoked, then the grants issued on it; the person is the audit actor."""
    management: DeviceManagement = current_app.extensions[DEVICE_MANAGEMENT_EXTENSION]
    management.revoke_device(session.device_id, reason, actor=f"person:{session.person_id}")
