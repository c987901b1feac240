"""The portal's own CAs: created once in the instance, then issuing, revoking and publishing."""

from __future__ import annotations

import stat
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509 import ocsp
from pki_material import NOW, TARO, YEAR, TestPki, name

from idp.clock import FixedClock
from idp.pki import attributes
from idp.pki.profiles import CARD_AUTH, SMARTPHONE_AUTH, SMARTPHONE_SIGN, KeyAlgorithm, ProfileError, generate_key
from idp.pki.registry import AlreadyRevoked, CertificateRef, CertificateState, UnknownCertificate
from idp.pki.service import (
    ROOT_NAME,
    SMARTPHONE_CA_NAME,
    PkiNotInitialised,
    PkiSetupError,
    PortalPki,
    UnknownAuthority,
    init_pki,
)
from idp.settings import PkiSettings, Settings
from idp.store.database import make_engine, make_session_factory, upgrade

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

ISSUER = "http://127.0.0.1:8000"
FILES = ("portal-root.key.pem", "portal-root.crt.pem", "smartphone-ca.key.pem", "smartphone-ca.crt.pem")


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    init_pki(tmp_path, issuer_url=ISSUER, now=NOW - YEAR)
    return tmp_path


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def portal(instance: Path, clock: FixedClock) -> Iterator[PortalPki]:
    settings = Settings(instance=instance, pki=PkiSettings(crl_lifetime=timedelta(hours=24)))
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    yield PortalPki(settings=settings, sessions=make_session_factory(engine), clock=clock)
    engine.dispose()


def crl_number(der: bytes) -> int:
    return x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def issue_phone(portal: PortalPki, pki: TestPki, profile: object = SMARTPHONE_AUTH) -> x509.Certificate:
    key = generate_key(KeyAlgorithm.EC_P256)
    return portal.issue_smartphone_certificate(
        profile=profile,  # type: ignore[arg-type]
        subject=name("phone"),
        public_key=key.public_key(),
        card_certificates=[pki.card_auth.certificate, pki.card_sign.certificate],
        attributes=TARO if profile is SMARTPHONE_SIGN else None,
    )


# init_pki

def test_init_creates_both_cas_with_private_keys_readable_by_the_owner_only(tmp_path: Path) -> None:
    assert init_pki(tmp_path, issuer_url=ISSUER, now=NOW) is True
    directory = tmp_path / "pki"
    assert sorted(path.name for path in directory.iterdir()) == sorted(FILES)
    for key_file in ("portal-root.key.pem", "smartphone-ca.key.pem"):
        assert stat.S_IMODE((directory / key_file).stat().st_mode) == 0o600


def test_init_twice_creates_nothing_and_changes_nothing(tmp_path: Path) -> None:
    init_pki(tmp_path, issuer_url=ISSUER, now=NOW)
    before = {file: (tmp_path / "pki" / file).read_bytes() for file in FILES}
    assert init_pki(tmp_path, issuer_url=ISSUER, now=NOW + YEAR) is False
    assert {file: (tmp_path / "pki" / file).read_bytes() for file in FILES} == before


def test_init_recreates_a_missing_smartphone_ca_under_the_existing_root(tmp_path: Path) -> None:
    init_pki(tmp_path, issuer_url=ISSUER, now=NOW)
    root = (tmp_path / "pki" / "portal-root.crt.pem").read_bytes()
    (tmp_path / "pki" / "smartphone-ca.key.pem").unlink()
    (tmp_path / "pki" / "smartphone-ca.crt.pem").unlink()
    assert init_pki(tmp_path, issuer_url=ISSUER, now=NOW) is True
    ca = x509.load_pem_x509_certificate((tmp_path / "pki" / "smartphone-ca.crt.pem").read_bytes())
    ca.verify_directly_issued_by(x509.load_pem_x509_certificate(root))


@pytest.mark.parametrize("removed", FILES)
def test_half_present_pair_is_an_error_and_is_not_overwritten(tmp_path: Path, removed: str) -> None:
    init_pki(tmp_path, issuer_url=ISSUER, now=NOW)
    (tmp_path / "pki" / removed).unlink()
    kept = {file: (tmp_path / "pki" / file).read_bytes() for file in FILES if file != removed}
    with pytest.raises(PkiSetupError, match="missing"):
        init_pki(tmp_path, issuer_url=ISSUER, now=NOW)
    assert {file: (tmp_path / "pki" / file).read_bytes() for file in FILES if file != removed} == kept
    assert not (tmp_path / "pki" / removed).exists()


def test_smartphone_ca_without_its_root_is_an_error(tmp_path: Path) -> None:
    init_pki(tmp_path, issuer_url=ISSUER, now=NOW)
    (tmp_path / "pki" / "portal-root.key.pem").unlink()
    (tmp_path / "pki" / "portal-root.crt.pem").unlink()
    with pytest.raises(PkiSetupError, match="root does not"):
        init_pki(tmp_path, issuer_url=ISSUER, now=NOW)


def test_key_that_does_not_fit_its_certificate_is_an_error(tmp_path: Path) -> None:
    init_pki(tmp_path, issuer_url=ISSUER, now=NOW)
    other = generate_key(KeyAlgorithm.EC_P256).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    )
    (tmp_path / "pki" / "smartphone-ca.key.pem").write_bytes(other)
    with pytest.raises(PkiSetupError, match="does not belong"):
        init_pki(tmp_path, issuer_url=ISSUER, now=NOW)


def test_unreadable_key_is_an_error(tmp_path: Path) -> None:
    init_pki(tmp_path, issuer_url=ISSUER, now=NOW)
    (tmp_path / "pki" / "portal-root.key.pem").write_text("not a key")
    with pytest.raises(PkiSetupError, match="cannot read"):
        init_pki(tmp_path, issuer_url=ISSUER, now=NOW)


def test_key_that_is_neither_rsa_nor_ec_is_an_error(tmp_path: Path) -> None:
    init_pki(tmp_path, issuer_url=ISSUER, now=NOW)
    edwards = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    )
    (tmp_path / "pki" / "portal-root.key.pem").write_bytes(edwards)
    with pytest.raises(PkiSetupError, match="neither an RSA nor an EC key"):
        init_pki(tmp_path, issuer_url=ISSUER, now=NOW)


def test_root_lives_twenty_years_and_the_ca_points_to_the_roots_crl(tmp_path: Path) -> None:
    init_pki(tmp_path, issuer_url="https://id.myna.example", now=NOW)
    root = x509.load_pem_x509_certificate((tmp_path / "pki" / "portal-root.crt.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "pki" / "smartphone-ca.crt.pem").read_bytes())
    assert root.not_valid_after_utc - root.not_valid_before_utc >= 20 * YEAR
    points = ca.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name == [x509.UniformResourceIdentifier("https://id.myna.example/pki/crl/portal-root.crl")]


def test_portal_pki_on_an_uninitialised_instance_is_refused(tmp_path: Path, clock: FixedClock) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    with pytest.raises(PkiNotInitialised, match="idp init"):
        PortalPki(settings=Settings(instance=tmp_path), sessions=make_session_factory(engine), clock=clock)
    engine.dispose()


# PortalPki

def test_authority_publishes_at_the_issuer_urls(portal: PortalPki) -> None:
    assert portal.authority.name == SMARTPHONE_CA_NAME
    assert portal.authority.crl_url == f"{ISSUER}/pki/crl/smartphone-ca.crl"
    assert portal.authority.ocsp_url == f"{ISSUER}/pki/ocsp"
    portal.authority.certificate.verify_directly_issued_by(portal.root)


def test_ca_certificates_are_served_by_name(portal: PortalPki) -> None:
    assert x509.load_der_x509_certificate(portal.ca_certificate_der(ROOT_NAME)) == portal.root
    assert x509.load_der_x509_certificate(portal.ca_certificate_der(SMARTPHONE_CA_NAME)) == portal.authority.certificate
    with pytest.raises(UnknownAuthority):
        portal.ca_certificate_der("jlis-root")


def test_smartphone_certificate_records_its_card_sources(portal: PortalPki, pki: TestPki) -> None:
    certificate = issue_phone(portal, pki)
    status = portal.status(certificate.serial_number)
    assert status is not None
    assert set(status.issued_from) == {pki.card_auth.ref, pki.card_sign.ref}
    assert [found.serial_number for found in portal.issued_from(pki.card_sign.ref)] == [certificate.serial_number]


def test_smartphone_certificate_never_outlives_its_card_certificates(portal: PortalPki, pki: TestPki) -> None:
    certificate = issue_phone(portal, pki)
    assert certificate.not_valid_after_utc == min(
        pki.card_auth.certificate.not_valid_after_utc, pki.card_sign.certificate.not_valid_after_utc,
    )


def test_smartphone_certificate_lasts_the_configured_lifetime_when_the_cards_last_longer(
    instance: Path, clock: FixedClock, pki: TestPki,
) -> None:
    settings = Settings(instance=instance, pki=PkiSettings(smartphone_certificate_lifetime=timedelta(days=30)))
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    portal = PortalPki(settings=settings, sessions=make_session_factory(engine), clock=clock)
    certificate = issue_phone(portal, pki)
    engine.dispose()
    assert certificate.not_valid_after_utc == NOW + timedelta(days=30)


def test_smartphone_signature_certificate_carries_the_card_attributes(portal: PortalPki, pki: TestPki) -> None:
    assert attributes.decode(issue_phone(portal, pki, SMARTPHONE_SIGN)) == TARO


def test_signature_certificate_without_attributes_is_refused(portal: PortalPki, pki: TestPki) -> None:
    key = generate_key(KeyAlgorithm.EC_P256)
    with pytest.raises(ProfileError, match="must carry basic attributes"):
        portal.issue_smartphone_certificate(
            profile=SMARTPHONE_SIGN, subject=name("x"), public_key=key.public_key(),
            card_certificates=[pki.card_sign.certificate],
        )


def test_user_auth_certificate_with_attributes_is_refused(portal: PortalPki, pki: TestPki) -> None:
    key = generate_key(KeyAlgorithm.EC_P256)
    with pytest.raises(ProfileError, match="carries no basic attributes"):
        portal.issue_smartphone_certificate(
            profile=SMARTPHONE_AUTH, subject=name("x"), public_key=key.public_key(),
            card_certificates=[pki.card_auth.certificate], attributes=TARO,
        )


def test_smartphone_certificate_without_card_certificates_is_refused(portal: PortalPki) -> None:
    key = generate_key(KeyAlgorithm.EC_P256)
    with pytest.raises(ProfileError, match="none were given"):
        portal.issue_smartphone_certificate(
            profile=SMARTPHONE_AUTH, subject=name("x"), public_key=key.public_key(), card_certificates=[],
        )


def test_card_profile_is_not_issued_by_the_portal(portal: PortalPki, pki: TestPki) -> None:
    key = generate_key(KeyAlgorithm.RSA_2048)
    with pytest.raises(ProfileError, match="does not issue card-auth"):
        portal.issue_smartphone_certificate(
            profile=CARD_AUTH, subject=name("x"), public_key=key.public_key(),
            card_certificates=[pki.card_auth.certificate],
        )


def test_first_crl_is_made_on_demand(portal: PortalPki) -> None:
    crl = x509.load_der_x509_crl(portal.current_crl())
    assert crl.issuer == portal.authority.certificate.subject
    assert (crl.last_update_utc, crl.next_update_utc) == (NOW, NOW + timedelta(hours=24))
    assert len(crl) == 0


def test_crl_is_reused_before_its_half_life(portal: PortalPki, clock: FixedClock) -> None:
    first = portal.current_crl()
    clock.advance(timedelta(hours=11, minutes=59))
    assert portal.current_crl() == first


def test_crl_is_regenerated_at_its_half_life(portal: PortalPki, clock: FixedClock) -> None:
    first = portal.current_crl()
    clock.advance(timedelta(hours=12))
    second = portal.current_crl()
    assert crl_number(second) > crl_number(first)
    assert x509.load_der_x509_crl(second).last_update_utc == NOW + timedelta(hours=12)


def test_revocation_republishes_the_crl_with_a_higher_number(
    portal: PortalPki, pki: TestPki, clock: FixedClock,
) -> None:
    before = portal.current_crl()
    certificate = issue_phone(portal, pki)
    clock.advance(timedelta(minutes=5))
    status = portal.revoke(certificate.serial_number, x509.ReasonFlags.key_compromise)
    after = portal.current_crl()
    assert (status.state, status.revoked_at) == (CertificateState.REVOKED, NOW + timedelta(minutes=5))
    assert crl_number(after) > crl_number(before)
    entry = x509.load_der_x509_crl(after).get_revoked_certificate_by_serial_number(certificate.serial_number)
    assert entry is not None


def test_resume_republishes_the_crl_without_the_certificate(portal: PortalPki, pki: TestPki) -> None:
    certificate = issue_phone(portal, pki)
    portal.revoke(certificate.serial_number, x509.ReasonFlags.certificate_hold)
    assert x509.load_der_x509_crl(portal.current_crl()).get_revoked_certificate_by_serial_number(
        certificate.serial_number,
    ) is not None
    portal.resume(certificate.serial_number)
    assert x509.load_der_x509_crl(portal.current_crl()).get_revoked_certificate_by_serial_number(
        certificate.serial_number,
    ) is None


def test_refused_revocation_publishes_nothing(portal: PortalPki, pki: TestPki) -> None:
    certificate = issue_phone(portal, pki)
    portal.revoke(certificate.serial_number, x509.ReasonFlags.superseded)
    published = portal.current_crl()
    with pytest.raises(AlreadyRevoked):
        portal.revoke(certificate.serial_number, x509.ReasonFlags.key_compromise)
    with pytest.raises(UnknownCertificate):
        portal.revoke(1, x509.ReasonFlags.key_compromise)
    assert portal.current_crl() == published


def test_root_publishes_its_own_crl(portal: PortalPki) -> None:
    crl = x509.load_der_x509_crl(portal.current_crl(ROOT_NAME))
    assert crl.issuer == portal.root.subject
    assert crl.is_signature_valid(portal.root.public_key())  # type: ignore[arg-type]


def test_crl_of_an_unknown_ca_is_refused(portal: PortalPki) -> None:
    with pytest.raises(UnknownAuthority):
        portal.current_crl("jlis-auth-ca")


def test_ocsp_answers_for_the_smartphone_ca_certificate_through_the_root(portal: PortalPki) -> None:
    request = ocsp.OCSPRequestBuilder().add_certificate(
        portal.authority.certificate, portal.root, hashes.SHA256(),
    ).build().public_bytes(serialization.Encoding.DER)
    response = ocsp.load_der_ocsp_response(portal.ocsp_response(request))
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.next_update_utc == NOW + timedelta(minutes=15)


def test_ocsp_answers_for_a_smartphone_certificate(portal: PortalPki, pki: TestPki) -> None:
    certificate = issue_phone(portal, pki)
    request = ocsp.OCSPRequestBuilder().add_certificate(
        certificate, portal.authority.certificate, hashes.SHA256(),
    ).build().public_bytes(serialization.Encoding.DER)
    assert ocsp.load_der_ocsp_response(portal.ocsp_response(request)).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_card_reference_finds_nothing_from_another_card(portal: PortalPki, pki: TestPki) -> None:
    issue_phone(portal, pki)
    assert portal.issued_from(CertificateRef(issuer_key_id=b"\x01" * 20, serial_number=1)) == []


def test_portal_pki_repr_names_the_instance_only(portal: PortalPki, instance: Path) -> None:
    assert repr(portal) == f"PortalPki({instance})"


def test_two_portals_on_one_database_record_the_ca_certificate_once(
    portal: PortalPki, instance: Path, clock: FixedClock,
) -> None:
    settings = Settings(instance=instance)
    engine = make_engine(settings.effective_database_url)
    other = PortalPki(settings=settings, sessions=make_session_factory(engine), clock=clock)
    first = portal.current_crl(ROOT_NAME)
    second = other.current_crl(ROOT_NAME)
    request = ocsp.OCSPRequestBuilder().add_certificate(
        other.authority.certificate, other.root, hashes.SHA256(),
    ).build().public_bytes(serialization.Encoding.DER)
    answer = ocsp.load_der_ocsp_response(other.ocsp_response(request))
    engine.dispose()
    assert second == first
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    status = portal.root_authority.registry.status(portal.authority.certificate.serial_number)
    assert status is not None
    assert status.state is CertificateState.GOOD
