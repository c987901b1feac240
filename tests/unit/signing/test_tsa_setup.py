"""`init_pki` makes the timestamping unit beside the portal CAs, once; the root answers for it."""

from __future__ import annotations

import stat
from datetime import timedelta

import pytest
from cryptography import x509

from idp.clock import FixedClock
from idp.pki.service import PkiNotInitialised, PkiSetupError, PortalPki, init_pki
from idp.settings import Settings
from idp.signing.status import ocsp_request, read_status
from idp.store.database import make_engine, make_session_factory

ISSUER = "http://127.0.0.1:8000"
TSA_FILES = ("timestamping.key.pem", "timestamping.crt.pem")


@pytest.fixture
def now(world):
    return world.clock.now()


def test_init_creates_the_unit_with_its_key_readable_by_the_owner_only(tmp_path, now):
    assert init_pki(tmp_path, issuer_url=ISSUER, now=now) is True
    assert sorted(path.name for path in (tmp_path / "tsa").iterdir()) == sorted(TSA_FILES)
    assert stat.S_IMODE((tmp_path / "tsa" / "timestamping.key.pem").stat().st_mode) == 0o600
    unit = x509.load_pem_x509_certificate((tmp_path / "tsa" / "timestamping.crt.pem").read_bytes())
    root = x509.load_pem_x509_certificate((tmp_path / "pki" / "portal-root.crt.pem").read_bytes())
    unit.verify_directly_issued_by(root)


def test_init_twice_keeps_the_unit(tmp_path, now):
    init_pki(tmp_path, issuer_url=ISSUER, now=now)
    before = {name: (tmp_path / "tsa" / name).read_bytes() for name in TSA_FILES}
    assert init_pki(tmp_path, issuer_url=ISSUER, now=now + timedelta(days=1)) is False
    assert {name: (tmp_path / "tsa" / name).read_bytes() for name in TSA_FILES} == before


def test_init_adds_the_unit_to_an_instance_made_before_it(tmp_path, now):
    init_pki(tmp_path, issuer_url=ISSUER, now=now)
    for name in TSA_FILES:
        (tmp_path / "tsa" / name).unlink()
    assert init_pki(tmp_path, issuer_url=ISSUER, now=now) is True
    assert all((tmp_path / "tsa" / name).exists() for name in TSA_FILES)


@pytest.mark.parametrize("removed", TSA_FILES)
def test_half_present_unit_is_an_error_and_is_not_overwritten(tmp_path, now, removed):
    init_pki(tmp_path, issuer_url=ISSUER, now=now)
    (tmp_path / "tsa" / removed).unlink()
    with pytest.raises(PkiSetupError, match="missing"):
        init_pki(tmp_path, issuer_url=ISSUER, now=now)
    assert not (tmp_path / "tsa" / removed).exists()


def test_unit_without_its_root_is_an_error(tmp_path, now):
    init_pki(tmp_path, issuer_url=ISSUER, now=now)
    for name in ("portal-root.key.pem", "portal-root.crt.pem", "smartphone-ca.key.pem", "smartphone-ca.crt.pem"):
        (tmp_path / "pki" / name).unlink()
    with pytest.raises(PkiSetupError, match="timestamping unit exists"):
        init_pki(tmp_path, issuer_url=ISSUER, now=now)


def test_portal_without_the_unit_asks_for_idp_init(tmp_path, now):
    init_pki(tmp_path, issuer_url=ISSUER, now=now)
    for name in TSA_FILES:
        (tmp_path / "tsa" / name).unlink()
    settings = Settings(instance=tmp_path)
    engine = make_engine(settings.effective_database_url)
    try:
        with pytest.raises(PkiNotInitialised, match="idp init"):
            PortalPki(settings=settings, sessions=make_session_factory(engine), clock=FixedClock(now))
    finally:
        engine.dispose()


def test_root_answers_for_the_unit_in_ocsp_and_its_crl(world):
    unit = world.pki.timestamping.certificate
    answer = world.pki.ocsp_response(ocsp_request(unit, world.pki.root))
    assert read_status(answer, certificate=unit, issuer=world.pki.root).state == "good"
    crl = x509.load_der_x509_crl(world.pki.current_crl("portal-root"))
    assert crl.get_revoked_certificate_by_serial_number(unit.serial_number) is None
