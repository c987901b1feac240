"""The SQL certificate registry and its migration, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from pki_material import NOW, TestPki, issue
from sqlalchemy import MetaData, select

from idp.pki.profiles import SMARTPHONE_AUTH, SMARTPHONE_SIGN, KeyAlgorithm, build_certificate, generate_key
from idp.pki.records import IssuedCertificate, SqlCertificateRegistry
from idp.pki.registry import (
    AlreadyRevoked,
    CertificateRef,
    CertificateRegistry,
    CertificateState,
    RegistryError,
    UnknownCertificate,
)
from idp.store.database import (
    Base,
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    make_session_factory,
    migration_connection,
    upgrade,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from idp.pki.authority import CertificateAuthority

BIG_SERIAL = (1 << 158) + 12345  # as wide as x509.random_serial_number() makes them


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def registry(sessions: sessionmaker[Session]) -> SqlCertificateRegistry:
    return SqlCertificateRegistry(sessions, "smartphone-ca")


@pytest.fixture
def leaf(pki: TestPki) -> x509.Certificate:
    """A certificate to record (issued by the session CA, recorded again here in a fresh database)."""
    return issue(pki.smartphone_ca, SMARTPHONE_SIGN, alternative_names=[x509.DNSName("x")]).certificate


def pki_metadata() -> MetaData:
    """The PKI's tables alone, as ``idp.pki.records`` declares them."""
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        if table.name.startswith("pki_"):
            table.to_metadata(metadata)
    return metadata


def test_revision_0001_creates_exactly_the_pki_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with migration_connection(engine) as connection:
            command.upgrade(alembic_config(connection), "0001")
        assert current_revision(engine) == "0001"
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, pki_metadata()) == []
    finally:
        engine.dispose()


def test_pki_tables_at_head_equal_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert [difference for difference in differences if "pki_" in repr(difference)] == []


def test_revision_0001_is_the_first(engine: Engine) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_revision("0001").down_revision is None
    assert current_revision(engine) == head_revision()


def test_registry_implements_the_protocol(registry: SqlCertificateRegistry) -> None:
    implementation: CertificateRegistry = registry
    assert repr(implementation) == "SqlCertificateRegistry('smartphone-ca')"


def test_recorded_certificate_reads_back(
    registry: SqlCertificateRegistry, leaf: x509.Certificate, pki: TestPki,
) -> None:
    registry.record(leaf, profile=SMARTPHONE_SIGN.name, issued_from=[pki.card_auth.ref, pki.card_sign.ref])
    status = registry.status(leaf.serial_number)
    assert status is not None
    assert status.serial_number == leaf.serial_number
    assert (status.profile, status.state, status.reason, status.revoked_at) == (
        SMARTPHONE_SIGN.name, CertificateState.GOOD, None, None,
    )
    assert status.not_after == leaf.not_valid_after_utc
    assert status.not_after.tzinfo is not None
    assert set(status.issued_from) == {pki.card_auth.ref, pki.card_sign.ref}
    assert registry.certificate(leaf.serial_number) == leaf


def test_serial_wider_than_any_sql_integer_is_kept_exactly(
    registry: SqlCertificateRegistry, pki: TestPki,
) -> None:
    certificate = issue(pki.smartphone_ca, SMARTPHONE_AUTH).certificate
    wide = certificate_with_serial(pki, BIG_SERIAL)
    registry.record(wide, profile=SMARTPHONE_AUTH.name)
    status = registry.status(BIG_SERIAL)
    assert status is not None
    assert status.serial_number == BIG_SERIAL
    assert registry.status(certificate.serial_number) is None


def certificate_with_serial(pki: TestPki, serial: int) -> x509.Certificate:
    key = generate_key(KeyAlgorithm.EC_P256)
    return build_certificate(
        profile=SMARTPHONE_AUTH, subject=pki.smartphone_auth.certificate.subject, public_key=key.public_key(),
        issuer=pki.smartphone_ca.issuer, not_before=NOW, not_after=NOW + timedelta(days=30),
        serial_number=serial, crl_url="http://x/crl", ocsp_url="http://x/ocsp",
    )


def test_unknown_serial_has_no_status(registry: SqlCertificateRegistry) -> None:
    assert registry.status(404) is None
    assert registry.certificate(404) is None


def test_recording_a_serial_twice_is_refused_and_keeps_the_first(
    registry: SqlCertificateRegistry, leaf: x509.Certificate,
) -> None:
    registry.record(leaf, profile=SMARTPHONE_SIGN.name)
    with pytest.raises(RegistryError, match="already recorded"):
        registry.record(leaf, profile=SMARTPHONE_AUTH.name)
    status = registry.status(leaf.serial_number)
    assert status is not None
    assert status.profile == SMARTPHONE_SIGN.name


def test_records_of_another_authority_are_invisible(
    sessions: sessionmaker[Session], registry: SqlCertificateRegistry, leaf: x509.Certificate,
) -> None:
    registry.record(leaf, profile=SMARTPHONE_SIGN.name)
    other = SqlCertificateRegistry(sessions, "portal-root")
    assert other.status(leaf.serial_number) is None
    with pytest.raises(UnknownCertificate):
        other.revoke(leaf.serial_number, reason=x509.ReasonFlags.superseded, at=NOW)


def test_revoke_records_reason_and_time(registry: SqlCertificateRegistry, leaf: x509.Certificate) -> None:
    registry.record(leaf, profile=SMARTPHONE_SIGN.name)
    status = registry.revoke(leaf.serial_number, reason=x509.ReasonFlags.affiliation_changed, at=NOW)
    assert (status.state, status.reason, status.revoked_at) == (
        CertificateState.REVOKED, x509.ReasonFlags.affiliation_changed, NOW,
    )
    assert registry.status(leaf.serial_number) == status


def test_revoke_unknown_serial_is_refused(registry: SqlCertificateRegistry) -> None:
    with pytest.raises(UnknownCertificate):
        registry.revoke(404, reason=x509.ReasonFlags.superseded, at=NOW)


def test_revoke_twice_is_refused_and_keeps_the_first_reason(
    registry: SqlCertificateRegistry, leaf: x509.Certificate,
) -> None:
    registry.record(leaf, profile=SMARTPHONE_SIGN.name)
    registry.revoke(leaf.serial_number, reason=x509.ReasonFlags.superseded, at=NOW)
    with pytest.raises(AlreadyRevoked):
        registry.revoke(leaf.serial_number, reason=x509.ReasonFlags.key_compromise, at=NOW + timedelta(hours=1))
    status = registry.status(leaf.serial_number)
    assert status is not None
    assert (status.reason, status.revoked_at) == (x509.ReasonFlags.superseded, NOW)


def test_hold_twice_is_refused(registry: SqlCertificateRegistry, leaf: x509.Certificate) -> None:
    registry.record(leaf, profile=SMARTPHONE_SIGN.name)
    registry.revoke(leaf.serial_number, reason=x509.ReasonFlags.certificate_hold, at=NOW)
    with pytest.raises(AlreadyRevoked, match="on hold"):
        registry.revoke(leaf.serial_number, reason=x509.ReasonFlags.certificate_hold, at=NOW + timedelta(hours=1))


def test_held_certificate_revoked_for_good_stays_revoked_from_its_hold(
    registry: SqlCertificateRegistry, leaf: x509.Certificate,
) -> None:
    registry.record(leaf, profile=SMARTPHONE_SIGN.name)
    registry.revoke(leaf.serial_number, reason=x509.ReasonFlags.certificate_hold, at=NOW)
    status = registry.revoke(leaf.serial_number, reason=x509.ReasonFlags.key_compromise, at=NOW + timedelta(days=2))
    assert (status.state, status.reason, status.revoked_at) == (
        CertificateState.REVOKED, x509.ReasonFlags.key_compromise, NOW,
    )


def test_resume_takes_a_held_certificate_off_hold(registry: SqlCertificateRegistry, leaf: x509.Certificate) -> None:
    registry.record(leaf, profile=SMARTPHONE_SIGN.name)
    held = registry.revoke(leaf.serial_number, reason=x509.ReasonFlags.certificate_hold, at=NOW)
    assert (held.state, held.reason) == (CertificateState.ON_HOLD, x509.ReasonFlags.certificate_hold)
    resumed = registry.resume(leaf.serial_number)
    assert (resumed.state, resumed.reason, resumed.revoked_at) == (CertificateState.GOOD, None, None)


def test_resume_of_a_good_certificate_is_refused(registry: SqlCertificateRegistry, leaf: x509.Certificate) -> None:
    registry.record(leaf, profile=SMARTPHONE_SIGN.name)
    with pytest.raises(AlreadyRevoked, match="not on hold"):
        registry.resume(leaf.serial_number)


def test_resume_of_an_unknown_serial_is_refused(registry: SqlCertificateRegistry) -> None:
    with pytest.raises(UnknownCertificate):
        registry.resume(404)


def test_listed_is_every_revoked_or_held_certificate(
    registry: SqlCertificateRegistry, pki: TestPki,
) -> None:
    good, revoked, held = (issue(pki.smartphone_ca, SMARTPHONE_AUTH).certificate for _ in range(3))
    for certificate in (good, revoked, held):
        registry.record(certificate, profile=SMARTPHONE_AUTH.name)
    registry.revoke(revoked.serial_number, reason=x509.ReasonFlags.key_compromise, at=NOW)
    registry.revoke(held.serial_number, reason=x509.ReasonFlags.certificate_hold, at=NOW)
    assert {status.serial_number: status.state for status in registry.listed()} == {
        revoked.serial_number: CertificateState.REVOKED,
        held.serial_number: CertificateState.ON_HOLD,
    }


def test_crl_numbers_start_at_one_and_increase_per_authority(
    sessions: sessionmaker[Session], registry: SqlCertificateRegistry,
) -> None:
    other = SqlCertificateRegistry(sessions, "portal-root")
    assert [registry.next_crl_number() for _ in range(3)] == [1, 2, 3]
    assert other.next_crl_number() == 1


def test_concurrent_crl_numbers_are_all_distinct(registry: SqlCertificateRegistry) -> None:
    numbers: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(5):
            number = registry.next_crl_number()
            with lock:
                numbers.append(number)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == list(range(1, 41))


def test_concurrent_revocations_let_exactly_one_succeed(
    registry: SqlCertificateRegistry, leaf: x509.Certificate,
) -> None:
    registry.record(leaf, profile=SMARTPHONE_SIGN.name)
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def revoke(index: int) -> None:
        start.wait()
        try:
            registry.revoke(
                leaf.serial_number, reason=x509.ReasonFlags.key_compromise, at=NOW + timedelta(seconds=index),
            )
        except AlreadyRevoked:
            outcome = "refused"
        else:
            outcome = "revoked"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=revoke, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["revoked"]


def test_issued_from_finds_the_phone_certificates_of_a_card(
    registry: SqlCertificateRegistry, pki: TestPki,
) -> None:
    from_card, from_other_card, unrelated = (issue(pki.smartphone_ca, SMARTPHONE_AUTH).certificate for _ in range(3))
    other_card = CertificateRef(issuer_key_id=pki.card_auth.ref.issuer_key_id, serial_number=999)
    registry.record(from_card, profile=SMARTPHONE_AUTH.name, issued_from=[pki.card_auth.ref, pki.card_sign.ref])
    registry.record(from_other_card, profile=SMARTPHONE_AUTH.name, issued_from=[other_card])
    registry.record(unrelated, profile=SMARTPHONE_AUTH.name)
    assert [status.serial_number for status in registry.issued_from(pki.card_sign.ref)] == [from_card.serial_number]
    assert [status.serial_number for status in registry.issued_from(other_card)] == [from_other_card.serial_number]


def test_issued_from_matches_the_issuer_key_not_only_the_serial(
    registry: SqlCertificateRegistry, pki: TestPki,
) -> None:
    certificate = issue(pki.smartphone_ca, SMARTPHONE_AUTH).certificate
    registry.record(certificate, profile=SMARTPHONE_AUTH.name, issued_from=[pki.card_auth.ref])
    same_serial_other_ca = CertificateRef(issuer_key_id=b"\x00" * 20, serial_number=pki.card_auth.ref.serial_number)
    assert registry.issued_from(same_serial_other_ca) == []


def test_published_crl_keeps_the_highest_number(
    registry: SqlCertificateRegistry, fresh_ca: CertificateAuthority,
) -> None:
    older = fresh_ca.build_crl(now=NOW, lifetime=timedelta(days=1))
    newer = fresh_ca.build_crl(now=NOW + timedelta(hours=1), lifetime=timedelta(days=1))
    assert registry.published_crl() is None
    assert registry.publish_crl(newer) is True
    assert registry.publish_crl(older) is False
    published = registry.published_crl()
    assert published is not None
    assert published.der == newer.public_bytes(Encoding.DER)
    assert published.this_update == NOW + timedelta(hours=1)
    assert published.next_update == NOW + timedelta(days=1, hours=1)


def test_nothing_is_half_written_when_a_source_is_duplicated(
    sessions: sessionmaker[Session], registry: SqlCertificateRegistry, leaf: x509.Certificate, pki: TestPki,
) -> None:
    registry.record(leaf, profile=SMARTPHONE_SIGN.name, issued_from=[pki.card_auth.ref, pki.card_auth.ref])
    status = registry.status(leaf.serial_number)
    assert status is not None
    assert status.issued_from == (pki.card_auth.ref,)
    with sessions() as session:
        assert len(session.scalars(select(IssuedCertificate)).all()) == 1


def test_crl_without_next_update_is_not_published(registry: SqlCertificateRegistry, pki: TestPki) -> None:
    signed = (
        x509.CertificateRevocationListBuilder().issuer_name(pki.smartphone_ca.certificate.subject)
        .last_update(NOW).next_update(NOW + timedelta(days=1)).add_extension(x509.CRLNumber(1), critical=False)
        .sign(pki.smartphone_ca.issuer.private_key, hashes.SHA256())
    )
    # RFC 5280 lets nextUpdate be absent; cryptography will not build one, so drop it (and the
    # signature's validity with it: publish_crl must refuse before anything reads the signature).
    parsed = asn1_crl.CertificateList.load(signed.public_bytes(Encoding.DER))
    parsed["tbs_cert_list"]["next_update"] = None
    without_next_update = x509.load_der_x509_crl(parsed.dump(force=True))
    assert without_next_update.next_update_utc is None
    with pytest.raises(ValueError, match="nextUpdate"):
        registry.publish_crl(without_next_update)
    assert registry.published_crl() is None
