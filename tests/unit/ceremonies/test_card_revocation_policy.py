"""``pki.card_revocation``: where an enrollment learns that the card certificates are not revoked.

OCSP reachable or not (the simulated J-LIS answers, or the fetcher fails as an unreachable host
does), CRLs cached fresh, too old, past nextUpdate or never: each policy either enrolls or refuses
with ``card_revocation_unavailable`` and the gap that made it (``RevocationGap``) as its detail.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from enrollment_world import NOW, ORIGIN, SeVendor, make_ceremony, new_jlis
from sqlalchemy import func, select

from idp.ceremonies.enrollment_errors import EnrollmentRejected, Reason
from idp.ceremonies.enrollment_service import EnrollmentService
from idp.ceremonies.records import DeviceRecord
from idp.ceremonies.revocation_cache import FetchFailed, RevocationGap
from idp.clock import FixedClock
from idp.pki.service import PortalPki, init_pki
from idp.settings import PkiSettings, Settings, SettingsError, load_settings
from idp.store.database import make_engine, make_session_factory, upgrade
from idp.store.ephemeral import MemoryEphemeralStore
from smartphone.jlis import AUTH_CA, ROOT, SIGN_CA


class SimulatedJlisNetwork:
    """The J-LIS OCSP responder as the portal reaches it, or not (``reachable``); counts the queries."""

    def __init__(self, jlis, *, reachable: bool) -> None:
        self.jlis = jlis
        self.reachable = reachable
        self.queries = 0

    def fetch_crl(self, url: str) -> bytes:
        raise FetchFailed(f"{url} is not fetched in these tests")

    def query_ocsp(self, url: str, request_der: bytes) -> bytes:
        self.queries += 1
        if not self.reachable:
            raise FetchFailed(f"{url} cannot be reached: ConnectTimeout")
        return self.jlis.ocsp(request_der, now=NOW - timedelta(minutes=1))


@pytest.fixture(scope="module")
def vendor():
    return SeVendor.create()


@pytest.fixture
def jlis(tmp_path):
    return new_jlis(tmp_path)


def _pem(path, *certificates):
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
    return path


@pytest.fixture
def portal(tmp_path, jlis, vendor):
    """``portal(policy, max_age, reachable)``: an enrollment service on SQLite and the simulated network."""
    engines = []

    def build(policy: str, *, reachable: bool, max_age: timedelta = timedelta(hours=48)):
        instance = tmp_path / f"instance-{len(engines)}"
        instance.mkdir()
        settings = Settings(issuer=ORIGIN, instance=instance, pki=PkiSettings(
            jlis_roots=(_pem(tmp_path / "root.pem", jlis.root.certificate),),
            jlis_intermediates=(_pem(tmp_path / "cas.pem", jlis.auth_ca.certificate, jlis.sign_ca.certificate),),
            attestation_roots=(_pem(tmp_path / "vendor.pem", vendor.root.certificate),),
            card_revocation=policy, card_crl_max_age=max_age,
        ))
        engine = make_engine(settings.effective_database_url)
        engines.append(engine)
        upgrade(engine)
        init_pki(instance, issuer_url=ORIGIN, now=NOW - timedelta(days=1))
        sessions = make_session_factory(engine)
        clock = FixedClock(NOW)
        network = SimulatedJlisNetwork(jlis, reachable=reachable)
        service = EnrollmentService(
            settings=settings, sessions=sessions, ephemeral=MemoryEphemeralStore(clock),
            pki=PortalPki(settings=settings, sessions=sessions, clock=clock), clock=clock, fetcher=network,
        )
        return service, network

    yield build
    for engine in engines:
        engine.dispose()


def _cache(service, jlis, *names: str, issued: timedelta = timedelta(minutes=1)) -> None:
    """Store the CRLs of ``names`` as issued ``issued`` before NOW (each valid for a day)."""
    for name in names:
        der = jlis.crl(name, now=NOW - issued).public_bytes(serialization.Encoding.DER)
        service.revocation.store(der, url=f"http://jlis.test/crl/{name}.crl", now=NOW)


def _enroll(service, jlis, vendor):
    pending = service.start()
    inputs = make_ceremony(jlis, vendor, pending=pending).inputs()
    return service.complete(enrollment_id=pending.id, **{name: inputs[name] for name in (
        "auth_attestation", "sign_attestation", "card_auth_certificate", "card_sign_certificate",
        "card_auth_signature", "card_sign_signature")})


def _refusal(service, jlis, vendor) -> EnrollmentRejected:
    with pytest.raises(EnrollmentRejected) as rejected:
        _enroll(service, jlis, vendor)
    with service._sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(DeviceRecord)) == 0  # nothing enrolled
    return rejected.value


def test_ocsp_answers_vouch_for_the_card_without_its_issuers_crls(portal, jlis, vendor):
    service, network = portal("ocsp-then-fresh-crl", reachable=True)
    _cache(service, jlis, ROOT)  # the root's CRL vouches for the issuing CAs only
    assert _enroll(service, jlis, vendor).device_id
    assert network.queries == 2


def test_unreachable_ocsp_falls_back_to_fresh_cached_crls(portal, jlis, vendor):
    service, network = portal("ocsp-then-fresh-crl", reachable=False)
    _cache(service, jlis, ROOT, AUTH_CA, SIGN_CA)
    assert _enroll(service, jlis, vendor).device_id
    assert network.queries == 2


@pytest.mark.parametrize(("issued", "max_age"), [
    pytest.param(timedelta(hours=2), timedelta(hours=1), id="older-than-card_crl_max_age"),
    pytest.param(timedelta(hours=25), timedelta(hours=48), id="past-nextUpdate"),
])
def test_unreachable_ocsp_and_a_stale_crl_refuse_with_crl_stale(portal, jlis, vendor, issued, max_age):
    service, _network = portal("ocsp-then-fresh-crl", reachable=False, max_age=max_age)
    _cache(service, jlis, ROOT)
    _cache(service, jlis, AUTH_CA, SIGN_CA, issued=issued)
    rejected = _refusal(service, jlis, vendor)
    assert (rejected.reason, rejected.subject, rejected.detail) == (
        Reason.CARD_REVOCATION_UNAVAILABLE, "card auth certificate", RevocationGap.CRL_STALE.value)


def test_unreachable_ocsp_and_no_cached_crl_refuse_with_crl_missing(portal, jlis, vendor):
    service, _network = portal("ocsp-then-fresh-crl", reachable=False)
    _cache(service, jlis, ROOT)
    rejected = _refusal(service, jlis, vendor)
    assert (rejected.reason, rejected.detail) == (Reason.CARD_REVOCATION_UNAVAILABLE, RevocationGap.CRL_MISSING.value)


def test_ocsp_only_refuses_when_ocsp_is_unreachable_even_with_fresh_crls(portal, jlis, vendor, caplog):
    service, _network = portal("ocsp-only", reachable=False)
    _cache(service, jlis, ROOT, AUTH_CA, SIGN_CA)
    rejected = _refusal(service, jlis, vendor)
    assert (rejected.reason, rejected.subject, rejected.detail) == (
        Reason.CARD_REVOCATION_UNAVAILABLE, "card auth certificate", RevocationGap.OCSP_UNAVAILABLE.value)
    assert "enrollment.revocation_unavailable policy=ocsp-only cause=ocsp_unavailable" in caplog.text


def test_ocsp_only_enrolls_on_ocsp_answers(portal, jlis, vendor):
    service, network = portal("ocsp-only", reachable=True)
    _cache(service, jlis, ROOT, AUTH_CA, SIGN_CA)
    assert _enroll(service, jlis, vendor).device_id
    assert network.queries == 2


def test_crl_only_never_asks_ocsp(portal, jlis, vendor):
    service, network = portal("crl-only", reachable=True)
    _cache(service, jlis, ROOT, AUTH_CA, SIGN_CA)
    assert _enroll(service, jlis, vendor).device_id
    assert network.queries == 0


def test_crl_only_refuses_a_stale_crl_though_ocsp_would_answer(portal, jlis, vendor):
    service, network = portal("crl-only", reachable=True, max_age=timedelta(hours=1))
    _cache(service, jlis, ROOT)
    _cache(service, jlis, AUTH_CA, SIGN_CA, issued=timedelta(hours=2))
    rejected = _refusal(service, jlis, vendor)
    assert (rejected.reason, rejected.detail) == (Reason.CARD_REVOCATION_UNAVAILABLE, RevocationGap.CRL_STALE.value)
    assert network.queries == 0


def test_the_policy_is_a_setting_and_an_unknown_one_is_refused():
    read = load_settings(environ={"IDP_PKI__CARD_REVOCATION": "ocsp-only", "IDP_PKI__CARD_CRL_MAX_AGE": "3600"})
    assert (read.pki.card_revocation, read.pki.card_crl_max_age) == ("ocsp-only", timedelta(hours=1))
    assert Settings().pki.card_revocation == "ocsp-then-fresh-crl"
    with pytest.raises(SettingsError) as refused:
        load_settings(environ={"IDP_PKI__CARD_REVOCATION": "soft-fail"})
    assert str(refused.value) == (
        "pki.card_revocation must be one of ocsp-then-fresh-crl, ocsp-only, crl-only, not 'soft-fail'")
