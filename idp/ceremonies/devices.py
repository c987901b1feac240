"""What the login ceremony reads and writes of an enrolled phone.

One statement loads everything ``verify_login`` needs of a device: its authentication
credential, its counter and both smartphone certificates' statuses (the signature certificate's
DER only when the RP asked for attributes). The counter only moves forward, in one conditional
UPDATE, so two approvals racing with one assertion cannot both pass.

Both are single Core statements on one connection (``single_statement``): the login path pays
one database round trip for each, and no ORM identity map or relationship loading. Nothing is
cached: a certificate's revocation is seen by the next approval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cryptography import x509
from sqlalchemy import and_, bindparam, literal, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from idp.ceremonies.login import DeviceCredential
from idp.ceremonies.records import DeviceRecord, DeviceStatus
from idp.pki.records import IssuedCertificate
from idp.pki.registry import CertificateState, CertificateStatus
from idp.pki.service import SMARTPHONE_CA_NAME
from idp.store.database import engine_of, single_statement

if TYPE_CHECKING:
    from collections.abc import Collection

    from sqlalchemy import Row, Select

__all__ = ["SqlDeviceDirectory"]

_STATUS_COLUMNS = ("serial", "profile", "not_after", "state", "reason", "revoked_at")
"""The certificate columns the login check reads (never the card sources)."""


def _credential_statement(*, with_der: bool, by_device: bool = False) -> Select[Any]:
    """The device with both certificates' status columns; the signature DER when ``with_der``.

    Found by its authentication credential id, or (``by_device``) by its id.
    """
    auth = aliased(IssuedCertificate, name="auth_certificate")
    sign = aliased(IssuedCertificate, name="sign_certificate")
    return (
        select(
            DeviceRecord.id, DeviceRecord.person_id, DeviceRecord.auth_credential_id, DeviceRecord.auth_public_key,
            DeviceRecord.auth_sign_count,
            *(getattr(auth, name).label(f"auth_{name}") for name in _STATUS_COLUMNS),
            *(getattr(sign, name).label(f"sign_{name}") for name in _STATUS_COLUMNS),
            (sign.der if with_der else literal(None)).label("sign_der"),
        )
        .join(auth, and_(auth.authority == SMARTPHONE_CA_NAME, auth.serial == DeviceRecord.auth_certificate_serial))
        .join(sign, and_(sign.authority == SMARTPHONE_CA_NAME, sign.serial == DeviceRecord.sign_certificate_serial))
        .where(
            DeviceRecord.id == bindparam("device_id") if by_device
            else DeviceRecord.auth_credential_id == bindparam("credential_id"),
            DeviceRecord.status == DeviceStatus.ACTIVE.value,
        )
    )


_WITH_DER = _credential_statement(with_der=True)
_WITHOUT_DER = _credential_statement(with_der=False)
_BY_DEVICE = _credential_statement(with_der=False, by_device=True)
_ADVANCE = (
    update(DeviceRecord)
    .where(DeviceRecord.id == bindparam("device_id"), DeviceRecord.auth_sign_count < bindparam("sign_count"))
    .values(auth_sign_count=bindparam("sign_count"))
)


class SqlDeviceDirectory:
    """Enrolled devices, as the login ceremony sees them."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._engine = engine_of(sessions)

    def __repr__(self) -> str:
        return "SqlDeviceDirectory()"

    def credential(self, credential_id: bytes, *, with_signature_certificate: bool) -> DeviceCredential | None:
        """The active device whose authentication key has ``credential_id``, or None."""
        statement = _WITH_DER if with_signature_certificate else _WITHOUT_DER
        with single_statement(self._engine) as connection:
            row = connection.execute(statement, {"credential_id": credential_id}).first()
        return None if row is None else _credential(row, with_signature_certificate=with_signature_certificate)

    def active_device(self, device_id: str) -> DeviceCredential | None:
        """The device ``device_id`` while it is active, with both certificates' statuses; else None.

        For a portal session (``idp.web.session``): its phone must still stand when it is used.
        """
        with single_statement(self._engine) as connection:
            row = connection.execute(_BY_DEVICE, {"device_id": device_id}).first()
        return None if row is None else _credential(row, with_signature_certificate=False)

    def advance_sign_count(self, device_id: str, sign_count: int) -> bool:
        """Store a higher counter; False when the stored one is already as high (a replay)."""
        with single_statement(self._engine) as connection:
            result = connection.execute(_ADVANCE, {"device_id": device_id, "sign_count": sign_count})
            return result.rowcount == 1

    def holding(self, serials: Collection[int]) -> list[str]:
        """The ids of the devices (active or revoked) whose auth or sign certificate is one of ``serials``."""
        if not serials:
            return []
        decimal = [str(serial) for serial in serials]
        statement = select(DeviceRecord.id).where(or_(
            DeviceRecord.auth_certificate_serial.in_(decimal), DeviceRecord.sign_certificate_serial.in_(decimal),
        ))
        with single_statement(self._engine) as connection:
            return list(connection.scalars(statement))


def _credential(row: Row[Any], *, with_signature_certificate: bool) -> DeviceCredential:
    return DeviceCredential(
        device_id=row.id,
        person_id=row.person_id,
        credential_id=row.auth_credential_id,
        public_key=row.auth_public_key,
        sign_count=row.auth_sign_count,
        auth_certificate=_status(row, "auth_"),
        sign_certificate=x509.load_der_x509_certificate(row.sign_der) if with_signature_certificate else None,
        sign_certificate_status=_status(row, "sign_"),
    )


def _status(row: Row[Any], prefix: str) -> CertificateStatus:
    """The status fields the login check reads (the card sources are not needed here)."""
    fields = row._mapping  # noqa: SLF001 - SQLAlchemy's public mapping view of a Row
    reason = fields[prefix + "reason"]
    return CertificateStatus(
        serial_number=int(fields[prefix + "serial"]),
        profile=fields[prefix + "profile"],
        not_after=fields[prefix + "not_after"],
        state=CertificateState(fields[prefix + "state"]),
        reason=None if reason is None else x509.ReasonFlags(reason),
        revoked_at=fields[prefix + "revoked_at"],
    )
