"""``smartphone approve`` against a real portal and J-LIS on loopback ports: the phone enrolled with
``smartphone enroll`` approves or declines a browser's login from the command line."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import requests
from click.testing import CliRunner, Result
from enrollment_portal import AUTH_PIN, PASSPHRASE, SIGN_PIN, running_portal, simulated_world

from idp.app import services
from smartphone.cli import main as smartphone_main

REDIRECT_URI = "http://127.0.0.1:9/callback"
ENV = {"SMARTPHONE_PASSPHRASE": PASSPHRASE.decode()}


@pytest.fixture
def world(tmp_path):
    with simulated_world(tmp_path / "sim") as world:
        yield world


@pytest.fixture
def portal(world, tmp_path):
    with running_portal(world, tmp_path / "instance") as portal:
        yield portal


@pytest.fixture
def shop(portal):
    return services(portal.app).oidc.clients.register(
        name="Demo Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic",
        scopes=["openid", "name"], now=datetime.now(UTC),
    )


def sim(*args: str) -> Result:
    return CliRunner().invoke(smartphone_main, list(args), env=ENV)


@pytest.fixture
def enrolled(world, portal):
    result = sim("enroll", "--state", str(world.state.root), "--phone", "pixel", "--card", "taro",
                 "--portal", portal.url, "--auth-pin", AUTH_PIN, "--sign-pin", SIGN_PIN)
    assert result.exit_code == 0, result.output
    return world


def start_login(portal, shop, scope: str = "openid name") -> tuple[requests.Session, str]:
    browser = requests.Session()
    query = {"response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
             "scope": scope, "state": "s1", "nonce": "n1", "code_challenge_method": "S256",
             "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}
    page = browser.get(f"{portal.url}/authorize", params=query, timeout=10)
    assert page.status_code == 200, page.text
    return browser, page.text


def link(page: str) -> str:
    return re.search(r'id="same-device" href="([^"]+)"', page).group(1).replace("&amp;", "&")


def finish(portal, browser: requests.Session, page: str) -> str:
    continue_url = re.search(r'data-continue-url="([^"]+)"', page).group(1)
    answer = browser.get(portal.url + continue_url, allow_redirects=False, timeout=10)
    assert answer.status_code in {302, 303}, answer.text
    return answer.headers["Location"]


def approve(world, *args: str) -> Result:
    return sim("approve", "--state", str(world.state.root), "--phone", "pixel", *args)


def counter(world) -> int:
    return max(credential.sign_count for credential in world.state.load_phone("pixel").credentials())


def test_approve_logs_the_browser_in(enrolled, portal, shop):
    browser, page = start_login(portal, shop)
    before = counter(enrolled)
    result = approve(enrolled, "--link", link(page))
    assert result.exit_code == 0, result.output
    code = re.search(r'id="verification-code">([^<]+)<', page).group(1)
    assert "request from: Demo Shop" in result.output
    assert f"verification code: {code}" in result.output
    assert "attributes: 氏名 / Name" in result.output
    assert result.output.rstrip().endswith("approved")
    assert counter(enrolled) > before
    assert finish(portal, browser, page).startswith(REDIRECT_URI + "?code=")


def test_approve_by_qr_payload(enrolled, portal, shop):
    browser, page = start_login(portal, shop, scope="openid")
    payload = re.search(r'data-payload="([^"]+)"', page).group(1)
    result = approve(enrolled, "--qr", payload)
    assert result.exit_code == 0, result.output
    assert "attributes: none" in result.output
    assert "?code=" in finish(portal, browser, page)


def test_decline_denies_access(enrolled, portal, shop):
    browser, page = start_login(portal, shop)
    result = approve(enrolled, "--link", link(page), "--decline")
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("declined")
    assert "error=access_denied" in finish(portal, browser, page)


def test_failed_fingerprint_sends_nothing(enrolled, portal, shop):
    browser, page = start_login(portal, shop)
    before = counter(enrolled)
    result = approve(enrolled, "--link", link(page), "--fingerprint", "fail")
    assert result.exit_code == 1
    assert "biometric user verification failed; nothing was sent" in result.output
    assert counter(enrolled) == before
    status_url = portal.url + re.search(r'data-status-url="([^"]+)"', page).group(1)
    assert browser.get(status_url, timeout=10).json()["status"] in {"pending", "scanned"}


def test_bad_inputs_end_with_one_line_errors(world, enrolled, portal, shop):
    unknown = approve(world, "--qr", "myna.unknown.1.deadbeef")
    assert unknown.exit_code == 1
    assert unknown.output == ("Error: the portal refused the lookup: There is no such transaction "
                              "(https://id.myna.example/problems/transaction-not-found)\n")
    _, page = start_login(portal, shop)
    transaction_id, step, _ = re.search(r'data-payload="myna\.([^"]+)"', page).group(1).split(".")
    forged = approve(world, "--qr", f"myna.{transaction_id}.{step}.{'0' * 43}")
    assert forged.exit_code == 1
    assert "problems/invalid-transaction-code)" in forged.output
    both = approve(world, "--qr", "x", "--link", "myna-gateway://transaction?id=a&token=b")
    assert both.exit_code == 2
    assert "give exactly one of --qr and --link" in both.output
    world.add_phone("nexus")
    unenrolled = sim("approve", "--state", str(world.state.root), "--phone", "nexus", "--qr", "x")
    assert unenrolled.exit_code == 1
    assert "phone 'nexus' is not enrolled" in unenrolled.output
    missing = sim("approve", "--state", str(world.state.root), "--phone", "nope", "--qr", "x")
    assert missing.exit_code == 1
    assert "no phone called 'nope'" in missing.output
