"""Device management over real HTTP: a phone lists its smartphone certificates and revokes itself.

The phone speaks only the documented device API (``smartphone.portal_client``); each request is
authenticated by a WebAuthn assertion over a one-time challenge. Runs on SQLite with the
in-process store and on PostgreSQL with Redis.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from enrollment_portal import AUTH_PIN, SIGN_PIN, running_portal

from idp.app import services
from idp.clock import FixedClock
from idp.pki.registry import CertificateState
from idp.pki.service import SMARTPHONE_CA_NAME, crl_url
from smartphone.portal_client import (
    Enrollment,
    PortalClient,
    PortalError,
    approve,
    device_certificates,
    enroll,
    revoke_device,
)

PROBLEMS = "https://id.myna.example/problems/"
REDIRECT_URI = "https://shop.example/callback"


@pytest.fixture
def portal(world, tmp_path, stores):
    with running_portal(world, tmp_path / "instance", clock=FixedClock(datetime.now(UTC)), **stores) as portal:
        yield portal


@dataclass
class Phone:
    client: PortalClient
    element: object
    enrollment: Enrollment

    def assertion(self, options: dict, **flags) -> dict:
        return self.element.get_assertion(
            credential_id=self.enrollment.auth_credential_id, rp_id=options["rpId"],
            challenge=base64.urlsafe_b64decode(options["challenge"] + "=="), origin=self.client.base_url, **flags,
        )

    def certificates(self) -> dict:
        return device_certificates(client=self.client, element=self.element, enrollment=self.enrollment)


def enroll_phone(world, portal, phone: str, card: str) -> Phone:
    element, holder = world.state.load_phone(phone), world.state.load_card(card)
    client = PortalClient(portal.url)
    enrollment = enroll(client=client, element=element, card=holder, auth_pin=AUTH_PIN, sign_pin=SIGN_PIN)
    return Phone(client=client, element=element, enrollment=enrollment)


@pytest.fixture
def phone(world, portal) -> Phone:
    return enroll_phone(world, portal, "pixel", "taro")


def assert_problem(error: PortalError, status: int, kind: str) -> None:
    assert (error.status, error.type) == (status, PROBLEMS + kind)


def der(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


def test_challenge_carries_webauthn_request_options(portal, phone):
    started = phone.client.device_challenge()
    assert started["challenge_id"]
    options = started["public_key"]
    assert options["rpId"] == "127.0.0.1"
    assert options["userVerification"] == "required"
    assert options["timeout"] > 0
    assert len(base64.urlsafe_b64decode(options["challenge"] + "==")) == 32


def test_list_shows_both_good_certificates(portal, phone):
    answer = phone.certificates()
    assert answer["device_id"] == phone.enrollment.device_id
    assert answer["status"] == "active"
    by_kind = {item["kind"]: item for item in answer["certificates"]}
    assert set(by_kind) == {"auth", "sign"}
    for kind, certificate in (("auth", phone.enrollment.auth_certificate),
                              ("sign", phone.enrollment.sign_certificate)):
        item = by_kind[kind]
        assert int(item["serial"], 16) == certificate.serial_number
        assert (item["status"], item["reason"]) == ("good", None)
        assert item["certificate"] == der(certificate)
        assert datetime.fromisoformat(item["not_after"]) == certificate.not_valid_after_utc


def test_sign_certificate_revoked_alone_is_listed_as_revoked(portal, phone):
    serial = phone.enrollment.sign_certificate.serial_number
    services(portal.app).pki.revoke(serial, x509.ReasonFlags.certificate_hold)
    by_kind = {item["kind"]: item for item in phone.certificates()["certificates"]}
    assert (by_kind["sign"]["status"], by_kind["sign"]["reason"]) == ("on_hold", "certificateHold")
    assert by_kind["auth"]["status"] == "good"


def test_self_revocation_revokes_both_certificates_and_refuses_the_next_login(portal, phone):
    answer = revoke_device(client=phone.client, element=phone.element, enrollment=phone.enrollment,
                           reason="keyCompromise")
    assert answer == {"status": "revoked"}
    pki = services(portal.app).pki
    serials = {phone.enrollment.auth_certificate.serial_number, phone.enrollment.sign_certificate.serial_number}
    for serial in serials:
        status = pki.status(serial)
        assert (status.state, status.reason) == (CertificateState.REVOKED, x509.ReasonFlags.key_compromise)
    crl = x509.load_der_x509_crl(requests.get(crl_url(portal.url, SMARTPHONE_CA_NAME), timeout=10).content)
    assert serials <= {entry.serial_number for entry in crl}
    with pytest.raises(PortalError) as listed:
        phone.certificates()
    assert_problem(listed.value, 403, "assertion-rejected")
    shop = services(portal.app).oidc.clients.register(
        name="Demo Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic", scopes=["openid"],
        now=datetime.now(UTC),
    )
    browser = requests.Session()
    page = browser.get(f"{portal.url}/authorize", params={
        "response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid", "state": "s", "nonce": "n", "code_challenge_method": "S256",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, timeout=10).text
    payload = page.split('data-payload="', 1)[1].split('"', 1)[0]
    transaction = phone.client.lookup_transaction(qr=payload)
    with pytest.raises(PortalError) as refused:
        approve(client=phone.client, element=phone.element, enrollment=phone.enrollment, transaction=transaction)
    assert_problem(refused.value, 403, "assertion-rejected")


def log_in(portal, phone: Phone) -> tuple[object, dict]:
    """A shop logs the phone's person in; the shop's client and its tokens."""
    shop = services(portal.app).oidc.clients.register(
        name="Demo Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic", scopes=["openid"],
        now=datetime.now(UTC),
    )
    browser, verifier = requests.Session(), secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    page = browser.get(f"{portal.url}/authorize", timeout=10, params={
        "response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid", "state": "s", "nonce": "n", "code_challenge_method": "S256",
        "code_challenge": challenge}).text
    payload = page.split('data-payload="', 1)[1].split('"', 1)[0]
    approve(client=phone.client, element=phone.element, enrollment=phone.enrollment,
            transaction=phone.client.lookup_transaction(qr=payload))
    continue_url = page.split('data-continue-url="', 1)[1].split('"', 1)[0]
    location = browser.get(portal.url + continue_url, allow_redirects=False, timeout=10).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    tokens = requests.post(f"{portal.url}/token", timeout=10, auth=(shop.client.client_id, shop.client_secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    return shop, tokens.json()


def test_self_revocation_revokes_the_refresh_and_access_tokens_of_its_logins(portal, phone):
    shop, tokens = log_in(portal, phone)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert requests.get(f"{portal.url}/userinfo", headers=bearer, timeout=10).status_code == 200
    revoke_device(client=phone.client, element=phone.element, enrollment=phone.enrollment, reason="keyCompromise")
    refreshed = requests.post(f"{portal.url}/token", timeout=10, auth=(shop.client.client_id, shop.client_secret),
                              data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"
    assert requests.get(f"{portal.url}/userinfo", headers=bearer, timeout=10).status_code == 401


def test_self_revocation_leaves_another_devices_logins_alone(world, portal, phone):
    world.issue_card("hanako")
    world.add_phone("galaxy")
    other = enroll_phone(world, portal, "galaxy", "hanako")
    _, tokens = log_in(portal, phone)
    revoke_device(client=other.client, element=other.element, enrollment=other.enrollment, reason="superseded")
    userinfo = requests.get(f"{portal.url}/userinfo", timeout=10,
                            headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 200


def test_revocation_defaults_to_cessation_of_operation(portal, phone):
    started = phone.client.device_challenge()
    response = requests.post(f"{portal.url}/device/v1/devices/self/revoke", timeout=10, json={
        "challenge_id": started["challenge_id"], "assertion": phone.assertion(started["public_key"])})
    assert response.status_code == 200, response.text
    status = services(portal.app).pki.status(phone.enrollment.auth_certificate.serial_number)
    assert status.reason is x509.ReasonFlags.cessation_of_operation


def test_replayed_challenge_is_refused(portal, phone):
    started = phone.client.device_challenge()
    phone.client.device_certificates(challenge_id=started["challenge_id"],
                                     assertion=phone.assertion(started["public_key"]))
    with pytest.raises(PortalError) as replayed:
        phone.client.device_certificates(challenge_id=started["challenge_id"],
                                         assertion=phone.assertion(started["public_key"]))
    assert_problem(replayed.value, 409, "device-challenge-used")


def test_refused_assertion_spends_the_challenge(portal, phone):
    started = phone.client.device_challenge()
    with pytest.raises(PortalError) as refused:
        phone.client.device_certificates(challenge_id=started["challenge_id"],
                                         assertion=phone.assertion(started["public_key"], presence_only=True))
    assert_problem(refused.value, 403, "assertion-rejected")
    with pytest.raises(PortalError) as again:
        phone.client.device_certificates(challenge_id=started["challenge_id"],
                                         assertion=phone.assertion(started["public_key"]))
    assert_problem(again.value, 409, "device-challenge-used")


def test_assertion_for_another_challenge_is_refused(portal, phone):
    first, second = phone.client.device_challenge(), phone.client.device_challenge()
    with pytest.raises(PortalError) as refused:
        phone.client.revoke_device(challenge_id=first["challenge_id"], assertion=phone.assertion(second["public_key"]),
                                   reason="superseded")
    assert_problem(refused.value, 403, "assertion-rejected")
    status = services(portal.app).pki.status(phone.enrollment.auth_certificate.serial_number)
    assert status.state is CertificateState.GOOD


def test_another_phone_acts_only_on_itself(world, portal, phone):
    world.issue_card("hanako")
    world.add_phone("galaxy")
    other = enroll_phone(world, portal, "galaxy", "hanako")
    started = phone.client.device_challenge()
    answer = other.client.revoke_device(challenge_id=started["challenge_id"],
                                        assertion=other.assertion(started["public_key"]), reason="superseded")
    assert answer == {"status": "revoked"}
    pki = services(portal.app).pki
    assert pki.status(other.enrollment.auth_certificate.serial_number).state is CertificateState.REVOKED
    assert pki.status(phone.enrollment.auth_certificate.serial_number).state is CertificateState.GOOD
    assert phone.certificates()["device_id"] == phone.enrollment.device_id


def test_unknown_challenge_is_404(portal, phone):
    started = phone.client.device_challenge()
    with pytest.raises(PortalError) as refused:
        phone.client.device_certificates(challenge_id="no-such-challenge",
                                         assertion=phone.assertion(started["public_key"]))
    assert_problem(refused.value, 404, "device-challenge-not-found")


@pytest.mark.parametrize("operation", ["certificates", "revoke"])
@pytest.mark.parametrize(
    "body",
    [None, [], {"assertion": {}}, {"challenge_id": "x"}, {"challenge_id": 7, "assertion": {}},
     {"challenge_id": "x", "assertion": "nope"}],
    ids=["no-body", "not-an-object", "no-challenge", "no-assertion", "challenge-not-a-string",
         "assertion-not-an-object"],
)
def test_malformed_request_is_400(portal, operation, body):
    response = requests.post(f"{portal.url}/device/v1/devices/self/{operation}", timeout=10,
                             **({"data": b"garbage"} if body is None else {"json": body}))
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == PROBLEMS + "invalid-device-request"


@pytest.mark.parametrize("reason", ["unspecified", "certificateHold", 7])
def test_reason_outside_the_three_is_400_and_keeps_the_challenge(portal, phone, reason):
    started = phone.client.device_challenge()
    assertion = phone.assertion(started["public_key"])
    response = requests.post(f"{portal.url}/device/v1/devices/self/revoke", timeout=10, json={
        "challenge_id": started["challenge_id"], "assertion": assertion, "reason": reason})
    assert response.status_code == 400
    assert response.json()["type"] == PROBLEMS + "invalid-device-request"
    listed = phone.client.device_certificates(challenge_id=started["challenge_id"], assertion=assertion)
    assert listed["device_id"] == phone.enrollment.device_id


def test_garbage_assertion_is_refused_and_spends_the_challenge(portal, phone):
    started = phone.client.device_challenge()
    with pytest.raises(PortalError) as refused:
        phone.client.device_certificates(challenge_id=started["challenge_id"], assertion={"rawId": "!!", "x": 1})
    assert_problem(refused.value, 403, "assertion-rejected")


def test_openapi_describes_the_device_management_endpoints(portal):
    document = requests.get(f"{portal.url}/device/v1/openapi.json", timeout=10).json()
    operations = {operation["operationId"] for path in document["paths"].values() for operation in path.values()}
    assert {"newDeviceChallenge", "listDeviceCertificates", "revokeDevice"} <= operations
