"""The login ceremony over real HTTP: an RP's browser, the simulated phone and the portal.

The browser is a ``requests`` session that keeps the portal's cookie; the phone is the simulated
SE and card speaking only the documented device API (``smartphone.portal_client``); the RP is the
test, which registers a client and redeems the code. Runs on SQLite with the in-process store and
on PostgreSQL with Redis.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from cryptography import x509
from enrollment_portal import AUTH_PIN, SIGN_PIN, running_portal, sync_revocations
from joserfc import jwt
from joserfc.jwk import KeySet

from idp.app import services
from idp.clock import FixedClock
from smartphone.portal_client import Enrollment, PortalClient, PortalError, approve, enroll

PROBLEMS = "https://id.myna.example/problems/"
REDIRECT_URI = "https://shop.example/callback"


@pytest.fixture
def clock():
    return FixedClock(datetime.now(UTC))


@pytest.fixture
def portal(world, tmp_path, stores, clock):
    with running_portal(world, tmp_path / "instance", clock=clock, **stores) as portal:
        yield portal


@dataclass
class Phone:
    client: PortalClient
    element: object
    enrollment: Enrollment

    def lookup(self, login: Login) -> dict:
        return self.client.lookup_transaction(qr=login.qr_payload)

    def approve(self, transaction: dict, **options) -> dict:
        return approve(client=self.client, element=self.element, enrollment=self.enrollment,
                       transaction=transaction, **options)


@pytest.fixture
def phone(world, portal) -> Phone:
    element, card = world.state.load_phone("pixel"), world.state.load_card("taro")
    client = PortalClient(portal.url)
    enrollment = enroll(client=client, element=element, card=card, auth_pin=AUTH_PIN, sign_pin=SIGN_PIN)
    return Phone(client=client, element=element, enrollment=enrollment)


@pytest.fixture
def shop(portal):
    return services(portal.app).oidc.clients.register(
        name="Demo Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic",
        scopes=["openid", "name", "address", "birthdate", "gender"], now=datetime.now(UTC),
    )


@dataclass
class Login:
    """One browser's login: its session (with the portal cookie), the request, and the login page."""

    browser: requests.Session
    verifier: str
    state: str
    nonce: str
    page: str

    @property
    def qr_payload(self) -> str:
        return re.search(r'data-payload="([^"]+)"', self.page).group(1)

    @property
    def continue_url(self) -> str:
        return re.search(r'data-continue-url="([^"]+)"', self.page).group(1)


def start_login(portal, shop, *, scope="openid", browser=None) -> Login:
    browser = browser or requests.Session()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    query = {"response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
             "scope": scope, "state": state, "nonce": nonce, "code_challenge": challenge,
             "code_challenge_method": "S256"}
    response = browser.get(f"{portal.url}/authorize?{urlencode(query)}", allow_redirects=False, timeout=10)
    assert response.status_code == 200, response.text
    return Login(browser=browser, verifier=verifier, state=state, nonce=nonce, page=response.text)


def finish_login(portal, login: Login) -> dict[str, list[str]]:
    response = login.browser.get(portal.url + login.continue_url, allow_redirects=False, timeout=10)
    assert response.status_code in {302, 303}, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    return parse_qs(urlsplit(location).query)


def redeem(portal, shop, login: Login, code: str) -> dict:
    response = requests.post(
        f"{portal.url}/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
              "code_verifier": login.verifier},
        auth=(shop.client.client_id, shop.client_secret), timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def assert_problem(error: PortalError, status: int, kind: str) -> None:
    assert (error.status, error.type) == (status, PROBLEMS + kind)


def test_phone_approval_logs_the_user_in_at_the_rp(portal, shop, phone):
    login = start_login(portal, shop)
    transaction = phone.lookup(login)
    assert transaction["rp_name"] == "Demo Shop"
    assert transaction["verification_code"] in login.page
    assert phone.approve(transaction) == {"status": "approved"}
    answer = finish_login(portal, login)
    assert answer["state"] == [login.state]
    assert answer["iss"] == [portal.url]
    tokens = redeem(portal, shop, login, answer["code"][0])
    keys = KeySet.import_key_set(requests.get(f"{portal.url}/jwks", timeout=10).json())
    claims = jwt.decode(tokens["id_token"], keys).claims
    assert claims["iss"] == portal.url
    assert claims["aud"] == shop.client.client_id
    assert claims["nonce"] == login.nonce
    assert claims["acr"] == "urn:myna-gateway:acr:smartphone-se"
    assert set(claims["amr"]) == {"hwk", "user", "mfa"}
    userinfo = requests.get(f"{portal.url}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"},
                            timeout=10).json()
    assert userinfo == {"sub": claims["sub"]}


def test_consented_attributes_come_from_the_smartphone_signature_certificate(portal, shop, phone):
    login = start_login(portal, shop, scope="openid name address birthdate gender")
    transaction = phone.lookup(login)
    assert sorted(transaction["requested_attributes"]) == ["address", "birthdate", "gender", "name"]
    phone.approve(transaction)
    tokens = redeem(portal, shop, login, finish_login(portal, login)["code"][0])
    userinfo = requests.get(f"{portal.url}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"},
                            timeout=10).json()
    assert userinfo["name"] == "山田\u3000太郎"
    assert userinfo["address"] == {"formatted": "東京都千代田区永田町1-7-1"}
    assert userinfo["birthdate"] == "1990-04-01"
    assert userinfo["gender"] == "male"
    verified = userinfo["verified_claims"]
    assert verified["claims"]["name"] == "山田　太郎"
    evidence = verified["verification"]["evidence"][0]
    assert evidence["type"] == "electronic_signature"
    assert evidence["issuer"] == phone.enrollment.sign_certificate.issuer.rfc4514_string()
    assert int(evidence["serial_number"], 16) == phone.enrollment.sign_certificate.serial_number


def test_same_device_link_opens_the_transaction(portal, shop, phone):
    login = start_login(portal, shop)
    link = re.search(r'id="same-device" href="([^"]+)"', login.page).group(1).replace("&amp;", "&")
    transaction = phone.client.lookup_transaction(link=link)
    assert transaction["verification_code"] in login.page


def test_replayed_qr_after_it_went_stale_is_refused(portal, shop, phone, clock):
    login = start_login(portal, shop)
    clock.advance(timedelta(seconds=10))
    with pytest.raises(PortalError) as refused:
        phone.lookup(login)
    assert_problem(refused.value, 400, "invalid-transaction-code")


def test_forged_qr_is_refused(portal, shop, phone):
    login = start_login(portal, shop)
    prefix, transaction_id, step, tag = login.qr_payload.split(".")
    forged = f"{prefix}.{transaction_id}.{step}.{'0' * len(tag)}"
    with pytest.raises(PortalError) as refused:
        phone.client.lookup_transaction(qr=forged)
    assert_problem(refused.value, 400, "invalid-transaction-code")


def test_assertion_for_another_transaction_is_refused(portal, shop, phone):
    first, second = start_login(portal, shop), start_login(portal, shop)
    wrong = dict(phone.lookup(first))
    wrong["public_key"] = phone.lookup(second)["public_key"]
    with pytest.raises(PortalError) as refused:
        phone.approve(wrong)
    assert_problem(refused.value, 403, "assertion-rejected")


def test_replayed_approval_is_refused(portal, shop, phone):
    login = start_login(portal, shop)
    transaction = phone.lookup(login)
    phone.approve(transaction)
    with pytest.raises(PortalError) as refused:
        phone.approve(transaction)
    assert_problem(refused.value, 409, "transaction-closed")


def test_counter_that_went_backwards_is_refused(portal, shop, phone):
    phone.approve(phone.lookup(start_login(portal, shop)))
    phone.element.restore_counter(phone.enrollment.auth_credential_id, 0)
    with pytest.raises(PortalError) as refused:
        phone.approve(phone.lookup(start_login(portal, shop)))
    assert_problem(refused.value, 403, "assertion-rejected")


def test_approval_without_user_verification_is_refused(portal, shop, phone):
    with pytest.raises(PortalError) as refused:
        phone.approve(phone.lookup(start_login(portal, shop)), presence_only=True)
    assert_problem(refused.value, 403, "assertion-rejected")


def test_revoked_smartphone_certificate_is_refused_at_login(portal, shop, phone):
    services(portal.app).pki.revoke(phone.enrollment.auth_certificate.serial_number, x509.ReasonFlags.key_compromise)
    with pytest.raises(PortalError) as refused:
        phone.approve(phone.lookup(start_login(portal, shop)))
    assert_problem(refused.value, 403, "assertion-rejected")


def test_revoked_card_is_refused_at_login_after_sync(world, portal, shop, phone):
    jlis = world.state.load_jlis()
    jlis.revoke_card(world.state.card_certificates("taro"), reason=x509.ReasonFlags.key_compromise,
                     now=datetime.now(UTC))
    sync_revocations(portal.settings)
    with pytest.raises(PortalError) as refused:
        phone.approve(phone.lookup(start_login(portal, shop)))
    assert_problem(refused.value, 403, "assertion-rejected")


def refresh(portal, shop, tokens: dict) -> requests.Response:
    return requests.post(f"{portal.url}/token", timeout=10, auth=(shop.client.client_id, shop.client_secret),
                         data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})


def test_revoked_signature_certificate_releases_no_attribute(portal, shop, phone):
    login = start_login(portal, shop, scope="openid name address birthdate gender")
    phone.approve(phone.lookup(login))
    tokens = redeem(portal, shop, login, finish_login(portal, login)["code"][0])
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert "name" in requests.get(f"{portal.url}/userinfo", headers=bearer, timeout=10).json()
    services(portal.app).pki.revoke(phone.enrollment.sign_certificate.serial_number, x509.ReasonFlags.key_compromise)
    userinfo = requests.get(f"{portal.url}/userinfo", headers=bearer, timeout=10)
    assert userinfo.status_code == 200
    assert set(userinfo.json()) == {"sub"}


def test_revoked_card_revokes_the_grants_of_its_phone_after_sync(world, portal, shop, phone):
    login = start_login(portal, shop)
    phone.approve(phone.lookup(login))
    tokens = redeem(portal, shop, login, finish_login(portal, login)["code"][0])
    jlis = world.state.load_jlis()
    jlis.revoke_card(world.state.card_certificates("taro"), reason=x509.ReasonFlags.key_compromise,
                     now=datetime.now(UTC))
    sync_revocations(portal.settings)
    refused = refresh(portal, shop, tokens)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


def test_attributes_without_consent_signature_are_refused(portal, shop, phone):
    transaction = phone.lookup(start_login(portal, shop, scope="openid name"))
    assertion = phone.element.get_assertion(
        credential_id=phone.enrollment.auth_credential_id, rp_id=transaction["public_key"]["rpId"],
        challenge=base64.urlsafe_b64decode(transaction["public_key"]["challenge"] + "=="), origin=portal.url,
    )
    with pytest.raises(PortalError) as refused:
        phone.client.approve_transaction(transaction["transaction_id"], assertion=assertion, consent_signature=None)
    assert_problem(refused.value, 403, "assertion-rejected")


def test_expired_transaction_is_refused(portal, shop, phone, clock):
    login = start_login(portal, shop)
    transaction = phone.lookup(login)
    clock.advance(timedelta(minutes=6))
    with pytest.raises(PortalError) as refused:
        phone.approve(transaction)
    assert refused.value.status in {404, 410}


def test_declined_login_returns_access_denied_to_the_rp(portal, shop, phone):
    login = start_login(portal, shop)
    transaction = phone.lookup(login)
    phone.client.decline_transaction(transaction["transaction_id"])
    answer = finish_login(portal, login)
    assert answer["error"] == ["access_denied"]
    assert answer["state"] == [login.state]


def test_unknown_transaction_is_404(portal, phone):
    with pytest.raises(PortalError) as refused:
        phone.client.decline_transaction("no-such-transaction")
    assert_problem(refused.value, 404, "transaction-not-found")


@pytest.mark.parametrize(
    "body", [[], {"assertion": "nope"}, {"assertion": {}, "consent_signature": 7}],
    ids=["not-an-object", "assertion-not-an-object", "signature-not-a-string"],
)
def test_malformed_approval_is_400(portal, shop, phone, body):
    transaction = phone.lookup(start_login(portal, shop))
    response = requests.post(f"{portal.url}/device/v1/transactions/{transaction['transaction_id']}/approve",
                             json=body, timeout=10)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == PROBLEMS + "invalid-device-request"


def test_openapi_describes_the_transaction_endpoints(portal):
    document = requests.get(f"{portal.url}/device/v1/openapi.json", timeout=10).json()
    operations = {operation["operationId"] for path in document["paths"].values() for operation in path.values()}
    assert {"lookupTransaction", "approveTransaction", "declineTransaction"} <= operations


def _link(login: Login) -> str:
    return re.search(r'id="same-device" href="([^"]+)"', login.page).group(1).replace("&amp;", "&")


def test_relayed_same_device_link_goes_stale(portal, shop, phone, clock):
    login = start_login(portal, shop)
    clock.advance(timedelta(minutes=2))
    with pytest.raises(PortalError) as refused:
        phone.client.lookup_transaction(link=_link(login))
    assert_problem(refused.value, 400, "invalid-transaction-code")


@pytest.mark.parametrize("token", ["", "abc", "12345.", "1.00000000000000000000000000000000"],
                         ids=["empty", "no-step", "no-tag", "forged-tag"])
def test_forged_same_device_link_is_refused(portal, shop, phone, token):
    login = start_login(portal, shop)
    transaction_id = parse_qs(urlsplit(_link(login)).query)["id"][0]
    forged = f"myna-gateway://transaction?{urlencode({'id': transaction_id, 'token': token})}"
    with pytest.raises(PortalError) as refused:
        phone.client.lookup_transaction(link=forged)
    assert refused.value.status == 400
    assert refused.value.type in {PROBLEMS + "invalid-transaction-code", PROBLEMS + "invalid-device-request"}


def test_status_poll_renews_the_same_device_link(portal, shop, phone, clock):
    login = start_login(portal, shop)
    status_url = re.search(r'data-status-url="([^"]+)"', login.page).group(1)
    clock.advance(timedelta(seconds=5))
    renewed = login.browser.get(portal.url + status_url, timeout=10).json()["same_device"]
    assert renewed != _link(login)
    assert phone.client.lookup_transaction(link=renewed)["verification_code"] in login.page
