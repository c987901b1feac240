"""``idp phones suspend`` and ``idp phones resume``: an operator holds a lost phone and resumes it when found."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from cryptography import x509
from enrollment_portal import AUTH_PIN, SIGN_PIN, running_portal

from idp.app import services
from idp.ceremonies.phone_life import PhoneLife
from idp.cli import main as idp_main
from idp.clock import SystemClock
from idp.pki.registry import CertificateState
from smartphone.portal_client import PortalClient, device_certificates, enroll


@pytest.fixture
def portal(world, tmp_path):
    with running_portal(world, tmp_path / "instance") as portal:
        yield portal


@pytest.fixture
def config(tmp_path, portal) -> str:
    path = tmp_path / "idp.toml"
    path.write_text(f'issuer = "{portal.url}"\ninstance = "{portal.settings.instance}"\n', encoding="utf-8")
    return str(path)


def idp(config: str, *args: str):
    return CliRunner().invoke(idp_main, [*args, "--config", config])


@pytest.fixture
def phone(world, portal):
    element = world.state.load_phone("pixel")
    client = PortalClient(portal.url)
    enrollment = enroll(client=client, element=element, card=world.state.load_card("taro"), auth_pin=AUTH_PIN,
                        sign_pin=SIGN_PIN)
    return client, element, enrollment


def states(portal, enrollment) -> tuple[CertificateState, CertificateState]:
    pki = services(portal.app).pki
    return tuple(pki.status(certificate.serial_number).state
                 for certificate in (enrollment.auth_certificate, enrollment.sign_certificate))


def test_an_operator_suspends_a_lost_phone_and_resumes_it_when_found(portal, config, phone):
    client, element, enrollment = phone
    suspended = idp(config, "phones", "suspend", enrollment.device_id)
    assert suspended.exit_code == 0, suspended.output
    assert states(portal, enrollment) == (CertificateState.ON_HOLD, CertificateState.ON_HOLD)
    assert "suspended" in suspended.output

    resumed = idp(config, "phones", "resume", enrollment.device_id)

    assert resumed.exit_code == 0, resumed.output
    assert states(portal, enrollment) == (CertificateState.GOOD, CertificateState.REVOKED)
    shown = device_certificates(client=client, element=element, enrollment=enrollment)
    assert [(item["kind"], item["status"], item["reason"]) for item in shown["certificates"]] == [
        ("auth", "good", None), ("sign", "revoked", "superseded"),
    ]


def test_suspending_twice_is_refused(portal, config, phone):
    _, _, enrollment = phone
    assert idp(config, "phones", "suspend", enrollment.device_id).exit_code == 0
    again = idp(config, "phones", "suspend", enrollment.device_id)
    assert again.exit_code == 1
    assert "This phone is not active" in again.output


def test_resuming_a_phone_that_is_not_suspended_is_refused(portal, config, phone):
    _, _, enrollment = phone
    refused = idp(config, "phones", "resume", enrollment.device_id)
    assert refused.exit_code == 1
    assert "This phone is not suspended" in refused.output
    assert states(portal, enrollment) == (CertificateState.GOOD, CertificateState.GOOD)


def test_an_unknown_phone_is_refused(portal, config):
    refused = idp(config, "phones", "suspend", "no-such-phone")
    assert refused.exit_code == 1
    assert "There is no such phone" in refused.output


def test_a_signature_certificate_revoked_meanwhile_does_not_stop_the_suspension(portal, config, phone, monkeypatch):
    """A sync after a move revokes the signature certificate between the status read and the hold:
    the phone is still suspended, and the grants issued on it are still revoked."""
    _client, _element, enrollment = phone
    pki = services(portal.app).pki
    revoke = pki.revoke
    sign_serial = enrollment.sign_certificate.serial_number

    def racing(serial, reason):
        if serial == sign_serial and reason is x509.ReasonFlags.certificate_hold:
            revoke(serial, x509.ReasonFlags.affiliation_changed)  # the sync got there first
        return revoke(serial, reason)

    monkeypatch.setattr(pki, "revoke", racing)
    revoked_grants = []
    life = PhoneLife(sessions=services(portal.app).sessions, pki=pki, clock=SystemClock(),
                     revoke_grants=lambda device_id: revoked_grants.append(device_id) or 0)
    life.suspend(enrollment.device_id, actor="operator")
    assert states(portal, enrollment) == (CertificateState.ON_HOLD, CertificateState.REVOKED)
    assert revoked_grants == [enrollment.device_id]
