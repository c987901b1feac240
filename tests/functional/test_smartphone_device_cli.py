"""``smartphone phone certificates`` and ``smartphone phone revoke`` against a real portal and J-LIS
on loopback ports, for a phone enrolled with ``smartphone enroll``."""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from enrollment_portal import AUTH_PIN, PASSPHRASE, SIGN_PIN, running_portal, simulated_world

from idp.app import services
from idp.pki.registry import CertificateState
from smartphone.cli import main as smartphone_main

ENV = {"SMARTPHONE_PASSPHRASE": PASSPHRASE.decode()}


@pytest.fixture
def world(tmp_path):
    with simulated_world(tmp_path / "sim") as world:
        yield world


@pytest.fixture
def portal(world, tmp_path):
    with running_portal(world, tmp_path / "instance") as portal:
        yield portal


def sim(*args: str) -> Result:
    return CliRunner().invoke(smartphone_main, list(args), env=ENV)


@pytest.fixture
def enrolled(world, portal):
    result = sim("enroll", "--state", str(world.state.root), "--phone", "pixel", "--card", "taro",
                 "--portal", portal.url, "--auth-pin", AUTH_PIN, "--sign-pin", SIGN_PIN)
    assert result.exit_code == 0, result.output
    return world


def phone(world, command: str, *args: str, name: str = "pixel") -> Result:
    return sim("phone", command, "--state", str(world.state.root), "--phone", name, *args)


def serials(world) -> tuple[int, int]:
    record = world.state.load_enrollment("pixel")
    return tuple(x509.load_pem_x509_certificate(record[key].encode()).serial_number
                 for key in ("auth_certificate", "sign_certificate"))


def test_certificates_lists_both_good(enrolled):
    result = phone(enrolled, "certificates")
    assert result.exit_code == 0, result.output
    auth, sign = serials(enrolled)
    assert "active" in result.output.splitlines()[0]
    assert f"auth {auth:x} good until" in result.output
    assert f"sign {sign:x} good until" in result.output


def test_revoke_revokes_both_and_the_phone_can_no_longer_authenticate(enrolled, portal):
    result = phone(enrolled, "revoke", "--reason", "superseded")
    assert result.exit_code == 0, result.output
    assert "revoked" in result.output
    pki = services(portal.app).pki
    for serial in serials(enrolled):
        status = pki.status(serial)
        assert (status.state, status.reason) == (CertificateState.REVOKED, x509.ReasonFlags.superseded)
    again = phone(enrolled, "certificates")
    assert again.exit_code == 1
    assert again.output == ("Error: the portal refused: The signed approval was not accepted "
                            "(https://id.myna.example/problems/assertion-rejected)\n")


def test_bad_inputs_end_with_one_line_errors(enrolled):
    bad_reason = phone(enrolled, "revoke", "--reason", "unspecified")
    assert bad_reason.exit_code == 2
    assert "Invalid value for '--reason'" in bad_reason.output
    enrolled.add_phone("nexus")
    unenrolled = phone(enrolled, "certificates", name="nexus")
    assert unenrolled.exit_code == 1
    assert "phone 'nexus' is not enrolled" in unenrolled.output
    missing = phone(enrolled, "revoke", name="nope")
    assert missing.exit_code == 1
    assert "no phone called 'nope'" in missing.output
    bad_name = phone(enrolled, "certificates", name="../x")
    assert bad_name.exit_code == 2
