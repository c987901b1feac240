"""The portal's certificate records in SQL, and the registry built on them (RFC 5280 §5).

Every certificate a portal CA issues is a row of ``pki_certificates``: serial, profile, validity,
state, revocation reason and time, and the DER. A smartphone certificate's sources (the card
certificates it was issued from) are rows of ``pki_certificate_sources``, indexed by the card
certificate, so "which phone certificates came from this card" is one query. Each CA has a CRL
counter and its last published CRL.

Serials are up to 20 octets (RFC 5280 §4.1.2.2: up to 159 bits from ``random_serial_number``),
wider than any SQL integer, so they are stored as decimal strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKeyConstraint,
    Index,
    LargeBinary,
    String,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, sessionmaker

from idp.audit import AuditEvent, append_in, certificate_subject
from idp.clock import Clock, SystemClock
from idp.pki.registry import (
    AlreadyRevoked,
    CertificateRef,
    CertificateState,
    CertificateStatus,
    RegistryError,
    UnknownCertificate,
)
from idp.store.database import Base

__all__ = [
    "CertificateSource",
    "CrlCounter",
    "IssuedCertificate",
    "PublishedCrl",
    "PublishedCrlRecord",
    "SqlCertificateRegistry",
]

_STATES = tuple(state.value for state in CertificateState)


class IssuedCertificate(Base):
    """One certificate a portal CA issued, and where it stands."""

    __tablename__ = "pki_certificates"

    authority: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The issuing CA's short name (``smartphone-ca``, ``portal-root``)."""
    serial: Mapped[str] = mapped_column(String(48), primary_key=True)
    """The serial number in decimal."""
    profile: Mapped[str] = mapped_column(String(32))
    subject_key_id: Mapped[bytes] = mapped_column(LargeBinary)
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    """An RFC 5280 §5.3.1 reason (``x509.ReasonFlags`` value); certificateHold while on hold."""
    revoked_at: Mapped[datetime | None]
    der: Mapped[bytes] = mapped_column(LargeBinary)

    sources: Mapped[list[CertificateSource]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="CertificateSource.source_serial",
    )

    __table_args__ = (
        CheckConstraint(f"state IN {_STATES!r}", name="state"),
        CheckConstraint(
            "(state = 'good' AND reason IS NULL AND revoked_at IS NULL)"
            " OR (state <> 'good' AND reason IS NOT NULL AND revoked_at IS NOT NULL)",
            name="revocation",
        ),
        Index("ix_pki_certificates_authority_state", "authority", "state"),
        Index("ix_pki_certificates_subject_key_id", "subject_key_id"),
    )


class CertificateSource(Base):
    """A card certificate that a smartphone certificate was issued from."""

    __tablename__ = "pki_certificate_sources"

    authority: Mapped[str] = mapped_column(String(64), primary_key=True)
    serial: Mapped[str] = mapped_column(String(48), primary_key=True)
    source_issuer_key_id: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    """The card certificate's authorityKeyIdentifier: its J-LIS CA, by key, never by name."""
    source_serial: Mapped[str] = mapped_column(String(48), primary_key=True)
    """The card certificate's serial number in decimal."""

    __table_args__ = (
        ForeignKeyConstraint(
            ["authority", "serial"],
            ["pki_certificates.authority", "pki_certificates.serial"],
            ondelete="CASCADE",
        ),
        Index("ix_pki_certificate_sources_source", "source_issuer_key_id", "source_serial"),
    )


class CrlCounter(Base):
    """The last CRL number one CA handed out (RFC 5280 §5.2.3: monotonically increasing)."""

    __tablename__ = "pki_crl_counters"

    authority: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_number: Mapped[int] = mapped_column(BigInteger)


class PublishedCrl(Base):
    """The CRL a CA currently publishes: the newest it has signed."""

    __tablename__ = "pki_crls"

    authority: Mapped[str] = mapped_column(String(64), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger)
    this_update: Mapped[datetime]
    next_update: Mapped[datetime]
    der: Mapped[bytes] = mapped_column(LargeBinary)


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishedCrlRecord:
    """A published CRL as read back: its number, its validity and its DER."""

    number: int
    this_update: datetime
    next_update: datetime
    der: bytes


class SqlCertificateRegistry:
    """``idp.pki.registry.CertificateRegistry`` on the SQL store, for one authority.

    Each method is one short transaction. Revocation and resumption are one conditional UPDATE
    (``… WHERE state IN …``), so of two concurrent revocations exactly one succeeds. Issuing,
    revoking and resuming append an audit record (actor ``portal``) in the same transaction;
    ``clock`` times those records.
    """

    def __init__(self, sessions: sessionmaker[Session], authority: str, *, clock: Clock | None = None) -> None:
        self._sessions = sessions
        self._authority = authority
        self._clock: Clock = clock if clock is not None else SystemClock()

    def __repr__(self) -> str:
        return f"SqlCertificateRegistry({self._authority!r})"

    def record(
        self,
        certificate: x509.Certificate,
        *,
        profile: str,
        issued_from: Sequence[CertificateRef] = (),
    ) -> None:
        """Remember a newly issued certificate as good, with the card certificates it came from.

        Raises RegistryError when this authority already recorded that serial.
        """
        row = IssuedCertificate(
            authority=self._authority,
            serial=str(certificate.serial_number),
            profile=profile,
            subject_key_id=x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            state=CertificateState.GOOD.value,
            reason=None,
            revoked_at=None,
            der=certificate.public_bytes(serialization.Encoding.DER),
            sources=[
                CertificateSource(
                    authority=self._authority,
                    serial=str(certificate.serial_number),
                    source_issuer_key_id=ref.issuer_key_id,
                    source_serial=str(ref.serial_number),
                )
                for ref in dict.fromkeys(issued_from)
            ],
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
                self._audit(session, AuditEvent.CERTIFICATE_ISSUED, certificate.serial_number, {"profile": profile})
        except IntegrityError as exc:
            raise RegistryError(
                f"{self._authority} already recorded serial {certificate.serial_number}",
            ) from exc

    def _audit(self, session: Session, event: AuditEvent, serial_number: int, details: dict[str, str]) -> None:
        """The audit record of a change to this authority's certificate, in the change's transaction."""
        append_in(
            session, event, at=self._clock.now(), actor="portal",
            subject=certificate_subject(self._authority, serial_number), details=details,
        )

    def status(self, serial_number: int) -> CertificateStatus | None:
        """The certificate's record, or None when this authority never issued it."""
        with self._sessions.begin() as session:
            row = session.get(IssuedCertificate, (self._authority, str(serial_number)))
            return None if row is None else _status(row)

    def certificate(self, serial_number: int) -> x509.Certificate | None:
        """The certificate this authority issued with that serial, or None."""
        with self._sessions.begin() as session:
            row = session.get(IssuedCertificate, (self._authority, str(serial_number)))
            return None if row is None else x509.load_der_x509_certificate(row.der)

    def revoke(self, serial_number: int, *, reason: x509.ReasonFlags, at: datetime) -> CertificateStatus:
        """Mark revoked, or on hold for certificateHold (RFC 5280 §5.3.1).

        A hold applies only to a good certificate; a revocation for good applies to a good or a
        held one, and a held one stays revoked from the time of its hold. Raises
        UnknownCertificate, or AlreadyRevoked when the certificate is revoked (or already held).
        """
        hold = reason is x509.ReasonFlags.certificate_hold
        allowed = [CertificateState.GOOD.value]
        if not hold:
            allowed.append(CertificateState.ON_HOLD.value)
        new_state = CertificateState.ON_HOLD if hold else CertificateState.REVOKED
        statement = (
            update(IssuedCertificate)
            .where(
                IssuedCertificate.authority == self._authority,
                IssuedCertificate.serial == str(serial_number),
                IssuedCertificate.state.in_(allowed),
            )
            .values(
                state=new_state.value,
                reason=reason.value,
                # A held certificate revoked for good stays revoked from the time of its hold.
                revoked_at=func.coalesce(IssuedCertificate.revoked_at, at, type_=IssuedCertificate.revoked_at.type),
            )
            .returning(IssuedCertificate.serial)
            .execution_options(synchronize_session=False)
        )
        with self._sessions.begin() as session:
            changed = session.execute(statement).first()
            row = session.get(IssuedCertificate, (self._authority, str(serial_number)), populate_existing=True)
            if row is None:
                raise UnknownCertificate(f"{self._authority} never issued serial {serial_number}")
            if changed is None:
                raise AlreadyRevoked(
                    f"serial {serial_number} is {_describe(row.state)} and cannot be "
                    f"{'held' if hold else 'revoked'}",
                )
            self._audit(session, AuditEvent.CERTIFICATE_REVOKED, serial_number, {"reason": reason.value})
            return _status(row)

    def resume(self, serial_number: int) -> CertificateStatus:
        """Take a held certificate off hold (RFC 5280 §5.3.1 removeFromCRL).

        Raises UnknownCertificate, or AlreadyRevoked unless the certificate is on hold.
        """
        statement = (
            update(IssuedCertificate)
            .where(
                IssuedCertificate.authority == self._authority,
                IssuedCertificate.serial == str(serial_number),
                IssuedCertificate.state == CertificateState.ON_HOLD.value,
            )
            .values(state=CertificateState.GOOD.value, reason=None, revoked_at=None)
            .returning(IssuedCertificate.serial)
            .execution_options(synchronize_session=False)
        )
        with self._sessions.begin() as session:
            changed = session.execute(statement).first()
            row = session.get(IssuedCertificate, (self._authority, str(serial_number)), populate_existing=True)
            if row is None:
                raise UnknownCertificate(f"{self._authority} never issued serial {serial_number}")
            if changed is None:
                raise AlreadyRevoked(f"serial {serial_number} is {_describe(row.state)}, not on hold")
            self._audit(session, AuditEvent.CERTIFICATE_RESUMED, serial_number, {})
            return _status(row)

    def listed(self) -> list[CertificateStatus]:
        """Every revoked or held certificate: the CRL's entries, by serial.

        Expired ones stay listed: RFC 5280 §3.3 forbids removing an entry before it has
        appeared on a CRL issued after the certificate expired, and keeping them is the simple
        way to honour that.
        """
        with self._sessions.begin() as session:
            rows = session.scalars(
                select(IssuedCertificate).where(
                    IssuedCertificate.authority == self._authority,
                    IssuedCertificate.state != CertificateState.GOOD.value,
                ),
            ).all()
            return sorted((_status(row) for row in rows), key=lambda status: status.serial_number)

    def next_crl_number(self) -> int:
        """The next CRL number (RFC 5280 §5.2.3), by one atomic upsert, so never handed out twice."""
        statement = (
            _insert(self._sessions, CrlCounter)
            .values(authority=self._authority, last_number=1)
        )
        statement = statement.on_conflict_do_update(
            index_elements=[CrlCounter.__table__.c.authority],
            set_={"last_number": CrlCounter.__table__.c.last_number + 1},
        ).returning(CrlCounter.__table__.c.last_number)
        with self._sessions.begin() as session:
            number: int = session.execute(statement).scalar_one()
            return number

    def issued_from(self, card: CertificateRef) -> list[CertificateStatus]:
        """Every certificate this authority issued from the card certificate ``card``."""
        with self._sessions.begin() as session:
            rows = session.scalars(
                select(IssuedCertificate)
                .join(
                    CertificateSource,
                    (CertificateSource.authority == IssuedCertificate.authority)
                    & (CertificateSource.serial == IssuedCertificate.serial),
                )
                .where(
                    IssuedCertificate.authority == self._authority,
                    CertificateSource.source_issuer_key_id == card.issuer_key_id,
                    CertificateSource.source_serial == str(card.serial_number),
                ),
            ).all()
            return sorted((_status(row) for row in rows), key=lambda status: status.serial_number)

    def publish_crl(self, crl: x509.CertificateRevocationList) -> bool:
        """Make ``crl`` the published one, unless a CRL with a higher number is published already.

        Returns whether it was published. Two processes regenerating at once both sign a CRL;
        the one with the higher number wins, whichever commits last.
        """
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        next_update = crl.next_update_utc
        if next_update is None:
            raise ValueError("a published CRL must carry nextUpdate")
        table = PublishedCrl.__table__
        values = {
            "authority": self._authority,
            "number": number,
            "this_update": crl.last_update_utc,
            "next_update": next_update,
            "der": crl.public_bytes(serialization.Encoding.DER),
        }
        statement = _insert(self._sessions, PublishedCrl).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.authority],
            set_={key: statement.excluded[key] for key in values if key != "authority"},
            where=table.c.number < statement.excluded.number,
        ).returning(table.c.number)
        with self._sessions.begin() as session:
            return session.execute(statement).first() is not None

    def published_crl(self) -> PublishedCrlRecord | None:
        """The CRL this authority publishes, or None before the first."""
        with self._sessions.begin() as session:
            row = session.get(PublishedCrl, self._authority)
            if row is None:
                return None
            return PublishedCrlRecord(
                number=row.number, this_update=row.this_update, next_update=row.next_update, der=row.der,
            )


def _insert(sessions: sessionmaker[Session], model: type[Base]) -> Any:
    """An INSERT that knows ``ON CONFLICT`` on the sessions' database (SQLite or PostgreSQL)."""
    bind = sessions.kw["bind"]
    if bind.dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def _describe(state: str) -> str:
    return {"good": "good", "revoked": "revoked", "on_hold": "on hold"}.get(state, state)


def _status(row: IssuedCertificate) -> CertificateStatus:
    return CertificateStatus(
        serial_number=int(row.serial),
        profile=row.profile,
        not_after=row.not_after,
        state=CertificateState(row.state),
        reason=None if row.reason is None else x509.ReasonFlags(row.reason),
        revoked_at=row.revoked_at,
        issued_from=tuple(
            CertificateRef(issuer_key_id=source.source_issuer_key_id, serial_number=int(source.source_serial))
            for source in row.sources
        ),
    )
