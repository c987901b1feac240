"""The smartphone CA's registry audits each issuance, hold, resumption and revocation in its own transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from idp.audit import AuditLog
from idp.clock import FixedClock
from idp.pki.records import SqlCertificateRegistry
from idp.pki.registry import AlreadyRevoked, RegistryError
from idp.store.database import make_engine, make_session_factory, upgrade

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

NOW = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def registry(engine: Engine) -> SqlCertificateRegistry:
    return SqlCertificateRegistry(make_session_factory(engine), "smartphone-ca", clock=FixedClock(NOW))


@pytest.fixture
def log(engine: Engine) -> AuditLog:
    return AuditLog(make_session_factory(engine), clock=FixedClock(NOW))


@pytest.fixture
def certificate() -> x509.Certificate:
    """A throwaway certificate: the registry reads only its serial, key and validity."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audit test")])
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def events(log: AuditLog) -> list[tuple[str, str, list[str], dict]]:
    return [(entry.event, entry.actor, entry.subject, entry.details) for entry in log.export()]


def test_issue_hold_resume_revoke_are_each_audited(registry, log, certificate):
    serial = certificate.serial_number
    registry.record(certificate, profile="smartphone-auth")
    registry.revoke(serial, reason=x509.ReasonFlags.certificate_hold, at=NOW)
    registry.resume(serial)
    registry.revoke(serial, reason=x509.ReasonFlags.key_compromise, at=NOW)
    subject = [f"certificate:smartphone-ca/{serial}"]
    assert events(log) == [
        ("certificate.issued", "portal", subject, {"profile": "smartphone-auth"}),
        ("certificate.revoked", "portal", subject, {"reason": "certificateHold"}),
        ("certificate.resumed", "portal", subject, {}),
        ("certificate.revoked", "portal", subject, {"reason": "keyCompromise"}),
    ]
    assert log.verify().intact


def test_refused_changes_leave_no_audit_record(registry, log, certificate):
    registry.record(certificate, profile="smartphone-auth")
    with pytest.raises(RegistryError, match="already recorded serial"):
        registry.record(certificate, profile="smartphone-auth")
    with pytest.raises(AlreadyRevoked, match="is good, not on hold"):
        registry.resume(certificate.serial_number)
    registry.revoke(certificate.serial_number, reason=x509.ReasonFlags.superseded, at=NOW)
    with pytest.raises(AlreadyRevoked, match="is revoked and cannot be revoked"):
        registry.revoke(certificate.serial_number, reason=x509.ReasonFlags.superseded, at=NOW)
    assert [event for event, *_ in events(log)] == ["certificate.issued", "certificate.revoked"]
    assert log.verify().count == 2
