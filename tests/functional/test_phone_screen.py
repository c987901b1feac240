"""The phone screen (``smartphone.phone_screen``) driven with Flask's test client against a real portal
and J-LIS on loopback ports: enroll with the demo card, then approve a browser's login."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import requests
from enrollment_portal import AUTH_PIN, PASSPHRASE, SIGN_PIN, running_portal, simulated_world

from idp.app import services
from smartphone.phone_screen import create_phone_app

REDIRECT_URI = "http://127.0.0.1:9/callback"


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
        scopes=["openid", "name", "address"], now=datetime.now(UTC),
    )


@pytest.fixture
def screen(world, portal):
    return create_phone_app(world.state.root, "pixel", portal.url, PASSPHRASE).test_client()


def token(page: str) -> str:
    return re.search(r'name="form_token" value="([^"]+)"', page).group(1)


def enroll(screen, *, auth_pin: str = AUTH_PIN) -> str:
    home = screen.get("/").get_data(as_text=True)
    assert 'data-view="enroll"' in home
    assert '<option value="taro">' in home
    answer = screen.post("/enroll", data={"form_token": token(home), "card": "taro", "auth_pin": auth_pin,
                                          "sign_pin": SIGN_PIN})
    return answer.get_data(as_text=True)


def start_login(portal, shop, scope: str = "openid name address") -> tuple[requests.Session, str]:
    browser = requests.Session()
    query = {"response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
             "scope": scope, "state": "s1", "nonce": "n1", "code_challenge_method": "S256",
             "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}
    page = browser.get(f"{portal.url}/authorize", params=query, timeout=10)
    assert page.status_code == 200, page.text
    return browser, page.text


def same_device_link(page: str) -> str:
    return re.search(r'id="same-device" href="([^"]+)"', page).group(1).replace("&amp;", "&")


def scan(screen, code: str) -> str:
    home = screen.get("/").get_data(as_text=True)
    assert 'data-view="scan"' in home
    return screen.post("/scan", data={"form_token": token(home), "code": code}).get_data(as_text=True)


def decide(screen, page: str, action: str) -> str:
    action_url = re.search(r'<form method="post" action="(/transactions/[^"]+)"', page).group(1)
    return screen.post(action_url, data={"form_token": token(page), "action": action}).get_data(as_text=True)


def test_enroll_then_approve_a_login_through_the_page(screen, portal, shop, world):
    assert "Enrolled as device" in enroll(screen)
    browser, login = start_login(portal, shop)
    transaction = scan(screen, same_device_link(login))
    assert 'id="rp-name">Demo Shop<' in transaction
    code = re.search(r'id="verification-code">([^<]+)<', login).group(1)
    assert f'id="verification-code">{code}<' in transaction
    assert "氏名 / Name" in transaction
    assert "住所 / Address" in transaction
    failed = decide(screen, transaction, "fingerprint-fails")
    assert "nothing was sent" in failed
    assert 'data-view="transaction"' in failed
    approved = decide(screen, failed, "approve")
    assert "Approved: Demo Shop" in approved
    continue_url = re.search(r'data-continue-url="([^"]+)"', login).group(1)
    answer = browser.get(portal.url + continue_url, allow_redirects=False, timeout=10)
    assert answer.status_code in {302, 303}
    assert answer.headers["Location"].startswith(REDIRECT_URI + "?code=")


def test_decline_through_the_page_denies_access(screen, portal, shop):
    enroll(screen)
    browser, login = start_login(portal, shop, scope="openid")
    transaction = scan(screen, same_device_link(login))
    assert "Sign-in only" in transaction
    assert "Declined: Demo Shop" in decide(screen, transaction, "decline")
    continue_url = re.search(r'data-continue-url="([^"]+)"', login).group(1)
    answer = browser.get(portal.url + continue_url, allow_redirects=False, timeout=10)
    assert "error=access_denied" in answer.headers["Location"]


def test_a_qr_payload_opens_the_request(screen, portal, shop):
    enroll(screen)
    _, login = start_login(portal, shop)
    payload = re.search(r'data-payload="([^"]+)"', login).group(1)
    assert 'id="rp-name">Demo Shop<' in scan(screen, payload)


def test_errors_are_readable_messages(screen, portal, shop, world):
    wrong = enroll(screen, auth_pin="9999")
    assert 'id="error"' in wrong
    assert "Cannot enroll" in wrong
    assert "Traceback" not in wrong
    assert world.state.load_enrollment("pixel") is None
    enroll(screen)
    refused = scan(screen, "myna.nothing.1.abc")
    assert "Cannot open the request" in refused
    assert 'data-view="scan"' in refused


def test_a_post_without_the_form_token_is_refused(screen):
    answer = screen.post("/enroll", data={"card": "taro", "auth_pin": AUTH_PIN, "sign_pin": SIGN_PIN})
    assert answer.status_code == 403
    assert "stale" in answer.get_data(as_text=True)
