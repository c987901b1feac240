"""The audit trail of a person's life at the portal, over real HTTP, on SQLite and on PostgreSQL with Redis.

TARO enrolls his phone, logs in to a shop releasing his four attributes, withdraws the consent
and revokes the phone; the operator removes the shop. Every step leaves one record (or, for a
certificate, one per certificate), the chain verifies, and no record holds an attribute, a PIN,
a token or a code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from enrollment_portal import AUTH_PIN, SIGN_PIN, TARO, running_portal
from sqlalchemy import text

from idp.app import services
from idp.audit import AuditLog
from idp.clock import SystemClock
from idp.pki.service import SMARTPHONE_CA_NAME
from smartphone.portal_client import PortalClient, approve, enroll, revoke_device

REDIRECT_URI = "https://shop.example/callback"
ATTRIBUTE_SCOPES = "openid name address birthdate gender"


@pytest.fixture
def portal(world, tmp_path, stores):
    with running_portal(world, tmp_path / "instance", **stores) as portal:
        yield portal


def log_in(portal, client, element, enrollment, shop) -> dict:
    """The shop logs TARO in asking for his four attributes; the token response."""
    browser, verifier = requests.Session(), secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    page = browser.get(f"{portal.url}/authorize", timeout=10, params={
        "response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
        "scope": ATTRIBUTE_SCOPES, "state": "s", "nonce": "n", "code_challenge_method": "S256",
        "code_challenge": challenge}).text
    payload = page.split('data-payload="', 1)[1].split('"', 1)[0]
    approve(client=client, element=element, enrollment=enrollment, transaction=client.lookup_transaction(qr=payload))
    continue_url = page.split('data-continue-url="', 1)[1].split('"', 1)[0]
    location = browser.get(portal.url + continue_url, allow_redirects=False, timeout=10).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    tokens = requests.post(f"{portal.url}/token", timeout=10, auth=(shop.client.client_id, shop.client_secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    return {**tokens.json(), "code": code}


def audit_rows(portal) -> list[dict]:
    """Every column of every audit row, JSON columns decoded (the database may store them \\u-escaped)."""
    with services(portal.app).engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM audit_records ORDER BY seq")).mappings().all()
    return [
        {key: json.loads(value) if key in {"subject", "details"} and isinstance(value, str) else value
         for key, value in row.items()}
        for row in rows
    ]


def test_a_persons_life_at_the_portal_is_audited_without_personal_data(world, portal):
    app = services(portal.app)
    shop = app.oidc.clients.register(
        name="Demo Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic",
        scopes=ATTRIBUTE_SCOPES.split(), now=datetime.now(UTC),
    )
    element, card = world.state.load_phone("pixel"), world.state.load_card("taro")
    client = PortalClient(portal.url)
    enrollment = enroll(client=client, element=element, card=card, auth_pin=AUTH_PIN, sign_pin=SIGN_PIN)
    tokens = log_in(portal, client, element, enrollment, shop)
    claims = requests.get(f"{portal.url}/userinfo", timeout=10,
                          headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    assert claims["name"] == TARO.name  # the attributes did flow through the portal
    log = AuditLog(app.sessions, clock=SystemClock())
    enrolled = next(entry for entry in log.export() if entry.event == "enrollment.completed")
    person, device = enrolled.subject[0], enrolled.subject[1]
    person_id = person.removeprefix("person:")
    assert app.oidc.consents.revoke(person_id=person_id, client_id=shop.client.client_id, now=datetime.now(UTC)) == 1
    revoke_device(client=client, element=element, enrollment=enrollment, reason="keyCompromise")
    assert app.oidc.clients.remove(shop.client.client_id)

    report = log.verify()
    assert report.intact, report.broken
    shop_id = f"client:{shop.client.client_id}"
    auth, sign = (f"certificate:{SMARTPHONE_CA_NAME}/{certificate.serial_number}"
                  for certificate in (enrollment.auth_certificate, enrollment.sign_certificate))
    grant = next(entry.details["grant"] for entry in log.export() if entry.event == "login")
    story = [(entry.event, entry.actor, entry.subject, entry.details) for entry in log.export()
             if not entry.subject[0].startswith("certificate:portal-root/")]
    assert story == [
        ("client.registered", "operator", [shop_id],
         {"auth_method": "client_secret_basic", "scopes": ATTRIBUTE_SCOPES.split()}),
        ("certificate.issued", "portal", [auth], {"profile": "smartphone-auth"}),
        ("certificate.issued", "portal", [sign], {"profile": "smartphone-sign"}),
        ("enrollment.completed", device.replace("device:", "phone:"), [person, device, auth, sign],
         {"new_person": True}),
        ("consent.given", person, [person, shop_id],
         {"attributes": ["address", "birthdate", "gender", "name"]}),
        ("login", device.replace("device:", "phone:"), [shop_id, f"grant:{grant}"],
         {"grant": grant, "acr": "urn:myna-gateway:acr:smartphone-se"}),
        ("consent.withdrawn", person, [person, shop_id], {"consents": 1}),
        ("certificate.revoked", "portal", [auth], {"reason": "keyCompromise"}),
        ("certificate.revoked", "portal", [sign], {"reason": "keyCompromise"}),
        ("device.revoked", device.replace("device:", "phone:"), [device], {"reason": "keyCompromise"}),
        ("client.removed", "operator", [shop_id], {}),
    ]

    dumped = json.dumps(audit_rows(portal), ensure_ascii=False, default=str)
    secrets_and_attributes = [
        TARO.name, *TARO.name.split("　"), TARO.address, "千代田区", TARO.date_of_birth.isoformat(),
        TARO.date_of_birth.strftime("%Y%m%d"), SIGN_PIN, shop.client_secret, tokens["access_token"],
        tokens["refresh_token"], tokens["id_token"], tokens["code"],
    ]
    for forbidden in secrets_and_attributes:
        assert forbidden not in dumped
    values = [value for row in audit_rows(portal) for value in (*row["subject"], *row["details"].values())]
    assert AUTH_PIN not in values  # four digits also occur inside hashes and serials: compare whole values
