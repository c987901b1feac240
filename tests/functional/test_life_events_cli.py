"""``idp phones suspend`` and ``idp phones resume``: an operator holds a lost phone and resumes it when found."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from enrollment_portal import AUTH_PIN, SIGN_PIN, running_portal

from idp.app import services
from idp.cli import main as idp_main
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
