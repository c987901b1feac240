"""Rate limits over real HTTP: each limit answers 429 with Retry-After in its endpoint's shape, and
normal use is never limited. The portal runs on loopback with tight limits (``LimitsSettings``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import requests
from enrollment_portal import AUTH_PIN, SIGN_PIN, running_portal
from test_login_ceremony import PROBLEMS, REDIRECT_URI, Phone, finish_login, redeem, start_login

from idp.app import services
from idp.clock import FixedClock
from idp.settings import LimitsSettings
from smartphone.portal_client import PortalClient, PortalError, enroll

WINDOW = timedelta(seconds=60)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime.now(UTC))


def limits(**tight: int) -> LimitsSettings:
    roomy = {"token_per_client": 1000, "token_per_address": 1000, "par_per_client": 1000,
             "par_per_address": 1000, "authorize_per_address": 1000, "device_per_address": 1000,
             "failed_approvals": 1000}
    return LimitsSettings(window=WINDOW, **(roomy | tight))


@pytest.fixture
def portal_for(world, tmp_path, stores, clock):
    """A portal with the given limits (one per test)."""
    opened = []

    def start(settings: LimitsSettings):
        context = running_portal(world, tmp_path / "instance", clock=clock, limits=settings, **stores)
        opened.append(context)
        return context.__enter__()

    yield start
    for context in opened:
        context.__exit__(None, None, None)


def shop_of(portal):
    return services(portal.app).oidc.clients.register(
        name="Demo Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic",
        scopes=["openid", "name"], now=services(portal.app).clock.now(),
    )


def phone_of(world, portal) -> Phone:
    element, card = world.state.load_phone("pixel"), world.state.load_card("taro")
    client = PortalClient(portal.url)
    return Phone(client=client, element=element,
                 enrollment=enroll(client=client, element=element, card=card, auth_pin=AUTH_PIN, sign_pin=SIGN_PIN))


def assert_retry_after(response: requests.Response) -> int:
    assert response.status_code == 429
    assert response.headers["Cache-Control"] == "no-store"
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= WINDOW.total_seconds()
    return seconds


def authorize(portal, shop, **headers: str) -> requests.Response:
    query = {"response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
             "scope": "openid", "nonce": "n", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
             "code_challenge_method": "S256"}
    return requests.get(f"{portal.url}/authorize", params=query, headers=headers, timeout=10)


def test_normal_use_is_never_limited(world, portal_for):
    portal = portal_for(LimitsSettings())  # the defaults
    shop, phone = shop_of(portal), phone_of(world, portal)
    for _ in range(3):
        login = start_login(portal, shop)
        phone.approve(phone.lookup(login))
        tokens = redeem(portal, shop, login, finish_login(portal, login)["code"][0])
        info = requests.get(f"{portal.url}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"},
                            timeout=10)
        assert info.status_code == 200


def test_login_pages_per_address_are_limited_with_an_html_page(portal_for):
    portal = portal_for(limits(authorize_per_address=2))
    shop = shop_of(portal)
    assert [authorize(portal, shop).status_code for _ in range(2)] == [200, 200]
    refused = authorize(portal, shop)
    assert_retry_after(refused)
    assert refused.headers["Content-Type"].startswith("text/html")
    assert '<code id="error">temporarily_unavailable</code>' in refused.text
    assert "Location" not in refused.headers


def test_forwarded_address_counts_only_behind_a_configured_proxy(portal_for):
    portal = portal_for(limits(authorize_per_address=1, proxy_hops=1))
    shop = shop_of(portal)
    assert authorize(portal, shop, **{"X-Forwarded-For": "198.51.100.7"}).status_code == 200
    assert authorize(portal, shop, **{"X-Forwarded-For": "198.51.100.8"}).status_code == 200  # another user
    assert_retry_after(authorize(portal, shop, **{"X-Forwarded-For": "198.51.100.7"}))
    # A client cannot pick its address by sending more entries: the proxy's own (rightmost) one counts.
    assert_retry_after(authorize(portal, shop, **{"X-Forwarded-For": "203.0.113.1, 198.51.100.8"}))


def test_forwarded_for_is_ignored_without_a_proxy(portal_for):
    portal = portal_for(limits(authorize_per_address=1))
    shop = shop_of(portal)
    assert authorize(portal, shop, **{"X-Forwarded-For": "198.51.100.7"}).status_code == 200
    assert_retry_after(authorize(portal, shop, **{"X-Forwarded-For": "198.51.100.9"}))  # same TCP peer


def token_request(portal, shop, secret: str | None = None) -> requests.Response:
    return requests.post(f"{portal.url}/token", data={"grant_type": "authorization_code", "code": "unknown",
                                                      "redirect_uri": REDIRECT_URI, "code_verifier": "x" * 43},
                         auth=(shop.client.client_id, secret or shop.client_secret), timeout=10)


def test_token_requests_per_address_are_limited_before_client_authentication(portal_for):
    portal = portal_for(limits(token_per_address=2))
    shop = shop_of(portal)
    assert [token_request(portal, shop, "wrong").status_code for _ in range(2)] == [401, 401]
    refused = token_request(portal, shop, "wrong")  # guessing secrets is slowed too
    assert_retry_after(refused)
    assert refused.json()["error"] == "temporarily_unavailable"


def test_token_requests_per_client_are_limited_with_oauth_json(portal_for):
    portal = portal_for(limits(token_per_client=2))
    shop = shop_of(portal)
    assert [token_request(portal, shop).json()["error"] for _ in range(2)] == ["invalid_grant", "invalid_grant"]
    refused = token_request(portal, shop)
    assert_retry_after(refused)
    assert refused.json() == {"error": "temporarily_unavailable",
                              "error_description": re.sub(r"\d+ s$", f"{refused.headers['Retry-After']} s",
                                                          refused.json()["error_description"])}
    assert refused.json()["error_description"].startswith("too many requests: retry after ")


def test_pushed_requests_per_client_are_limited(portal_for):
    portal = portal_for(limits(par_per_client=1))
    shop = shop_of(portal)
    form = {"response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
            "scope": "openid", "nonce": "n", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256"}

    def push() -> requests.Response:
        return requests.post(f"{portal.url}/par", data=form, auth=(shop.client.client_id, shop.client_secret),
                             timeout=10)

    assert push().status_code == 201
    refused = push()
    assert_retry_after(refused)
    assert refused.json()["error"] == "temporarily_unavailable"


def test_pushed_requests_per_address_are_limited_before_client_authentication(portal_for):
    portal = portal_for(limits(par_per_address=2))
    shop = shop_of(portal)

    def push(secret: str) -> requests.Response:
        return requests.post(f"{portal.url}/par", data={"client_id": shop.client.client_id},
                             auth=(shop.client.client_id, secret), timeout=10)

    assert [push("wrong").status_code for _ in range(2)] == [401, 401]
    refused = push(shop.client_secret)  # over the address's limit, even with the right secret
    assert_retry_after(refused)
    assert refused.json()["error"] == "temporarily_unavailable"


def test_device_api_per_address_is_limited_with_problem_json(portal_for):
    portal = portal_for(limits(device_per_address=2))
    lookup = f"{portal.url}/device/v1/transactions/lookup"
    assert [requests.post(lookup, json={"qr": "myna.x.1.y"}, timeout=10).status_code for _ in range(2)] == [404, 404]
    refused = requests.post(lookup, json={"qr": "myna.x.1.y"}, timeout=10)
    assert_retry_after(refused)
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["type"] == PROBLEMS + "rate-limited"
    assert refused.json()["status"] == 429


def test_repeated_refused_approvals_lock_the_persons_logins(world, portal_for, clock):
    portal = portal_for(limits(failed_approvals=2))
    shop, phone = shop_of(portal), phone_of(world, portal)
    for _ in range(2):  # two refused approvals: no user verification
        with pytest.raises(PortalError) as refused:
            phone.approve(phone.lookup(start_login(portal, shop)), presence_only=True)
        assert refused.value.status == 403
    login = start_login(portal, shop)
    with pytest.raises(PortalError) as locked:
        phone.approve(phone.lookup(login))  # a good approval, but the person is locked
    assert (locked.value.status, locked.value.type) == (429, PROBLEMS + "approvals-locked")

    clock.advance(portal.settings.limits.person_lock + timedelta(seconds=1))
    login = start_login(portal, shop)
    assert phone.approve(phone.lookup(login)) == {"status": "approved"}
