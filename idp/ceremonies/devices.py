"""What the login ceremony reads and writes of an enrolled phone.

One statement loads everything ``verify_login`` needs of a device: its authentication
credential, its counter and both smartphone certificates' statuses (the signature certificate's
DER only when the RP asked for attributes). The counter only moves forward, in one conditional
UPDATE, so two approvals racing with one assertion cannot both pass.
"""

from __future__ import annotations

from cryptography import x509
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from idp.ceremonies.login import DeviceCredential
from idp.ceremonies.records import DeviceRecord, DeviceStatus
from idp.pki.records import IssuedCertificate
from idp.pki.registry import CertificateState, CertificateStatus
from idp.pki.service import SMARTPHONE_CA_NAME

__all__ = ["SqlDeviceDirectory"]


class SqlDeviceDirectory:
    """Enrolled devices, as the login ceremony sees them."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def __repr__(self) -> str:
        return "SqlDeviceDirectory()"

    def credential(self, credential_id: bytes, *, with_signature_certificate: bool) -> DeviceCredential | None:
        """The active device whose authentication key has ``credential_id``, or None."""
        auth = aliased(IssuedCertificate)
        sign = aliased(IssuedCertificate)
        statement = (
            select(DeviceRecord, auth, sign)
            .join(auth, and_(auth.authority == SMARTPHONE_CA_NAME, auth.serial == DeviceRecord.auth_certificate_serial))
            .join(sign, and_(sign.authority == SMARTPHONE_CA_NAME, sign.serial == DeviceRecord.sign_certificate_serial))
            .where(DeviceRecord.auth_credential_id == credential_id, DeviceRecord.status == DeviceStatus.ACTIVE.value)
        )
        with self._sessions.begin() as session:
            row = session.execute(statement).first()
            if row is None:
                return None
            device, auth_row, sign_row = row
            return DeviceCredential(
                device_id=device.id,
                person_id=device.person_id,
                credential_id=device.auth_credential_id,
                public_key=device.auth_public_key,
                sign_count=device.auth_sign_count,
                auth_certificate=_status(auth_row),
                sign_certificate=x509.load_der_x509_certificate(sign_row.der) if with_signature_certificate else None,
                sign_certificate_status=_status(sign_row),
            )

    def advance_sign_count(self, device_id: str, sign_count: int) -> bool:
        """Store a higher counter; False when the stored one is already as high (a replay)."""
        statement = (
            update(DeviceRecord)
            .where(DeviceRecord.id == device_id, DeviceRecord.auth_sign_count < sign_count)
            .values(auth_sign_count=sign_count)
        )
        with self._sessions.begin() as session:
            return session.execute(statement).rowcount == 1


def _status(row: IssuedCertificate) -> CertificateStatus:
    """The status fields the login check reads (the card sources are not needed here)."""
    return CertificateStatus(
        serial_number=int(row.serial),
        profile=row.profile,
        not_after=row.not_after,
        state=CertificateState(row.state),
        reason=None if row.reason is None else x509.ReasonFlags(row.reason),
        revoked_at=row.revoked_at,
    )
