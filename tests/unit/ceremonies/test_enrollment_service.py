"""EnrollmentService and the J-LIS CRL cache on a real SQLite database and the in-process store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from enrollment_world import NOW, ORIGIN, SeVendor, make_ceremony, new_jlis
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from idp.ceremonies.enrollment import verify_enrollment
from idp.ceremonies.enrollment_errors import (
    EnrollmentAlreadyUsed,
    EnrollmentNotFound,
    EnrollmentRejected,
    EnrollmentTimedOut,
    Reason,
)
from idp.ceremonies.enrollment_service import EnrollmentService
from idp.ceremonies.records import DeviceRecord, PersonRecord
from idp.ceremonies.revocation_cache import CrlRefused, RefusalReason
from idp.clock import FixedClock
from idp.pki.registry import CertificateState
from idp.pki.service import PortalPki, init_pki
from idp.settings import PkiSettings, Settings
from idp.store.database import make_engine, make_session_factory, upgrade
from idp.store.ephemeral import MemoryEphemeralStore
from smartphone.jlis import AUTH_CA, ROOT, SIGN_CA


@pytest.fixture(scope="module")
def vendor():
    return SeVendor.create()


@pytest.fixture
def jlis(tmp_path):
    return new_jlis(tmp_path)


@pytest.fixture
def clock():
    return FixedClock(NOW)


def _pem(path, *certificates):
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
    return path


@pytest.fixture
def service(tmp_path, jlis, vendor, clock):
    instance = tmp_path / "instance"
    instance.mkdir()
    settings = Settings(
        issuer=ORIGIN, instance=instance,
        pki=PkiSettings(
            jlis_roots=(_pem(tmp_path / "root.pem", jlis.root.certificate),),
            jlis_intermediates=(_pem(tmp_path / "cas.pem", jlis.auth_ca.certificate, jlis.sign_ca.certificate),),
            attestation_roots=(_pem(tmp_path / "vendor.pem", vendor.root.certificate),),
        ),
    )
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    init_pki(instance, issuer_url=ORIGIN, now=NOW - timedelta(days=1))
    sessions = make_session_factory(engine)
    yield EnrollmentService(
        settings=settings, sessions=sessions, ephemeral=MemoryEphemeralStore(clock),
        pki=PortalPki(settings=settings, sessions=sessions, clock=clock), clock=clock,
    )
    engine.dispose()


def _crl(jlis, name, *, now=NOW):
    return jlis.crl(name, now=now - timedelta(minutes=1)).public_bytes(serialization.Encoding.DER)


def _sync(service, jlis):
    for name in (ROOT, AUTH_CA, SIGN_CA):
        service.revocation.store(_crl(jlis, name), url=f"http://jlis.test/crl/{name}.crl", now=NOW)


def _counts(service):
    with service._sessions.begin() as session:
        return (session.scalar(select(func.count()).select_from(PersonRecord)),
                session.scalar(select(func.count()).select_from(DeviceRecord)))


def _complete(service, ceremony, enrollment_id):
    inputs = ceremony.inputs()
    return service.complete(
        enrollment_id=enrollment_id,
        **{name: inputs[name] for name in (
            "auth_attestation", "sign_attestation", "card_auth_certificate", "card_sign_certificate",
            "card_auth_signature", "card_sign_signature")},
    )


def test_service_enrolls_from_cached_crls(service, jlis, vendor):
    _sync(service, jlis)
    pending = service.start()
    ceremony = make_ceremony(jlis, vendor, pending=pending)
    completed = _complete(service, ceremony, pending.id)
    assert completed.chain == (service._pki.authority.certificate,)
    assert _counts(service) == (1, 1)
    with pytest.raises(EnrollmentAlreadyUsed):
        _complete(service, ceremony, pending.id)


def test_service_without_revocation_information_refuses_and_stores_nothing(service, jlis, vendor):
    pending = service.start()
    with pytest.raises(EnrollmentRejected) as rejected:
        _complete(service, make_ceremony(jlis, vendor, pending=pending), pending.id)
    assert rejected.value.reason is Reason.CARD_REVOCATION_UNAVAILABLE
    assert _counts(service) == (0, 0)


def test_unknown_and_expired_enrollments(service, clock):
    with pytest.raises(EnrollmentNotFound):
        service.take("A" * 22)
    pending = service.start()
    clock.advance(timedelta(minutes=5))
    with pytest.raises(EnrollmentTimedOut):
        service.take(pending.id)


def test_failed_recording_leaves_no_row_and_revokes_what_was_issued(service, jlis, vendor):
    ceremony = make_ceremony(jlis, vendor)
    verified = verify_enrollment(**ceremony.inputs())
    first = service.enroll(verified)
    with pytest.raises(IntegrityError):  # the same SE credentials cannot be enrolled twice
        service.enroll(verified)
    assert _counts(service) == (1, 1)
    listed = service._pki.authority.registry.listed()
    assert len(listed) == 2
    assert {status.reason for status in listed} == {x509.ReasonFlags.cessation_of_operation}
    assert {status.state for status in listed} == {CertificateState.REVOKED}
    assert first.auth_certificate.serial_number not in {status.serial_number for status in listed}


def test_crl_with_a_bad_signature_is_refused(service, jlis, tmp_path):
    impostor = new_jlis(tmp_path, "jlis")  # same names, other keys
    with pytest.raises(CrlRefused) as refused:
        service.revocation.store(_crl(impostor, AUTH_CA), url="http://jlis.test/crl/jlis-auth-ca.crl", now=NOW)
    assert refused.value.reason is RefusalReason.BAD_SIGNATURE
    assert service.revocation.crls() == ()


def test_older_crl_is_refused_and_the_newer_kept(service, jlis):
    older = _crl(jlis, AUTH_CA)
    newer = _crl(jlis, AUTH_CA)
    assert service.revocation.store(newer, url="u", now=NOW).stored
    assert not service.revocation.store(newer, url="u", now=NOW).stored
    with pytest.raises(CrlRefused) as refused:
        service.revocation.store(older, url="u", now=NOW)
    assert refused.value.reason is RefusalReason.OLDER
    assert service.revocation.crls() == (newer,)


def test_crl_of_an_unknown_issuer_or_unreadable_is_refused(service, tmp_path):
    other = new_jlis(tmp_path, "other")
    with pytest.raises(CrlRefused) as unreadable:
        service.revocation.store(b"not a crl", url="u", now=NOW)
    assert unreadable.value.reason is RefusalReason.MALFORMED
    renamed = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(x509.Name.from_rfc4514_string("CN=Somebody Else"))
        .last_update(NOW).next_update(NOW + timedelta(days=1))
        .add_extension(x509.CRLNumber(1), critical=False)
        .sign(other.root.issuer.private_key, hashes.SHA256())
    )
    with pytest.raises(CrlRefused) as unknown:
        service.revocation.store(renamed.public_bytes(serialization.Encoding.DER), url="u", now=NOW)
    assert unknown.value.reason is RefusalReason.UNKNOWN_ISSUER
