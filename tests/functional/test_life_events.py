"""A person's life over real HTTP: card renewal, a move, a lost card's reissue, a new phone, a lost
then found phone. Each keeps the same pairwise ``sub`` at two RPs and the person's consents, refuses
the old phone or its old certificates at login with the exact reason, and publishes the change in
the CRL and OCSP answers that ``openssl`` reads. SQLite with the in-process store, PostgreSQL with Redis.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from enrollment_portal import AUTH_PIN, PASSPHRASE, SIGN_PIN, TARO, running_portal, sync_revocations
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from idp.app import services
from idp.ceremonies.records import DeviceRecord
from idp.oidc.grants_records import Consent
from smartphone.card import CardKey
from smartphone.cli import main as smartphone_main
from smartphone.portal_client import (
    Enrollment,
    PortalClient,
    PortalError,
    approve,
    enroll,
    phone_life_digest,
    reenroll_signature_key,
    resume_phone,
    suspend_phone,
)
from smartphone.webauthn_data import b64url, b64url_decode

PROBLEMS = "https://id.myna.example/problems/"
OPENSSL = shutil.which("openssl")
ATTRIBUTES = "openid name address birthdate gender"
NEW_ADDRESS = "大阪府大阪市北区梅田1-1"
HANAKO = dataclasses.replace(TARO, name="佐藤\u3000花子")
CARD_EVENTS = {
    "renew": ["card", "renew"],
    "move": ["card", "move", "--address", NEW_ADDRESS, "--prefecture", "大阪府", "--city", "大阪市"],
    "reissue": ["card", "reissue", "--auth-pin", AUTH_PIN, "--sign-pin", SIGN_PIN],
}


def card_event(world, event: str) -> None:
    """A card life event at J-LIS, with the ``smartphone`` CLI, then ``idp pki sync`` (CRLs and cascade)."""
    result = CliRunner().invoke(smartphone_main, [*CARD_EVENTS[event], "--state", str(world.state.root),
                                                  "--card", "taro"], env={"SMARTPHONE_PASSPHRASE": PASSPHRASE.decode()})
    assert result.exit_code == 0, result.output


@pytest.fixture
def portal(world, tmp_path, stores):
    """A portal that follows the J-LIS linking feed, as an operator configures it."""
    configured = world.pki_settings
    world.pki_settings = lambda: dataclasses.replace(configured(), jlis_linking_url=f"{world.jlis_url}/linking")
    with running_portal(world, tmp_path / "instance", **stores) as portal:
        yield portal


@dataclass
class Rp:
    client_id: str
    secret: str
    redirect_uri: str


def register(portal, name: str, host: str) -> Rp:
    redirect_uri = f"https://{host}/callback"
    registered = services(portal.app).oidc.clients.register(
        name=name, redirect_uris=[redirect_uri], auth_method="client_secret_basic",
        scopes=ATTRIBUTES.split(), now=datetime.now(UTC),
    )
    return Rp(client_id=registered.client.client_id, secret=registered.client_secret, redirect_uri=redirect_uri)


@pytest.fixture
def rps(portal) -> tuple[Rp, Rp]:
    """Two relying parties in two sectors: each sees its own pairwise ``sub``."""
    return register(portal, "Demo Shop", "shop.example"), register(portal, "Demo Clinic", "clinic.example")


@dataclass
class Phone:
    name: str
    client: PortalClient
    element: object
    enrollment: Enrollment


def enroll_phone(world, portal, name: str, *, card: str = "taro") -> Phone:
    if name not in {path.name for path in (world.state.root / "phones").iterdir()}:
        world.add_phone(name)
    element = world.state.load_phone(name)
    client = PortalClient(portal.url)
    enrollment = enroll(client=client, element=element, card=world.state.load_card(card), auth_pin=AUTH_PIN,
                        sign_pin=SIGN_PIN)
    world.state.save_phone(name, element)
    return Phone(name=name, client=client, element=element, enrollment=enrollment)


@dataclass
class LoggedIn:
    tokens: dict
    claims: dict
    userinfo: dict


def log_in(portal, rp: Rp, phone: Phone, *, scope: str = "openid") -> LoggedIn:
    """The whole code flow: the browser asks, the phone approves, the RP redeems the code."""
    browser = requests.Session()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {"response_type": "code", "client_id": rp.client_id, "redirect_uri": rp.redirect_uri, "scope": scope,
             "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
             "code_challenge_method": "S256"}
    page = browser.get(f"{portal.url}/authorize?{urlencode(query)}", timeout=10).text
    transaction = phone.client.lookup_transaction(qr=re.search(r'data-payload="([^"]+)"', page).group(1))
    approve(client=phone.client, element=phone.element, enrollment=phone.enrollment, transaction=transaction)
    continue_url = re.search(r'data-continue-url="([^"]+)"', page).group(1)
    location = browser.get(portal.url + continue_url, allow_redirects=False, timeout=10).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    tokens = requests.post(f"{portal.url}/token", auth=(rp.client_id, rp.secret), timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri, "code_verifier": verifier,
    }).json()
    keys = KeySet.import_key_set(requests.get(f"{portal.url}/jwks", timeout=10).json())
    userinfo = requests.get(f"{portal.url}/userinfo", timeout=10,
                            headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    return LoggedIn(tokens=tokens, claims=jwt.decode(tokens["id_token"], keys).claims, userinfo=userinfo)


def subs(portal, rps, phone: Phone) -> tuple[str, str]:
    return tuple(log_in(portal, rp, phone).claims["sub"] for rp in rps)


def refused_reason(portal, rp: Rp, phone: Phone, caplog, *, scope: str = "openid",
                   problem: str = "assertion-rejected") -> str:
    """Log in with ``phone``, expect 403 ``problem``; the reason the portal logged."""
    caplog.clear()
    with pytest.raises(PortalError) as refused:
        log_in(portal, rp, phone, scope=scope)
    assert (refused.value.status, refused.value.type) == (403, PROBLEMS + problem)
    reasons = re.findall(r"login\.rejected reason=([a-z_]+)", caplog.text)
    assert len(reasons) == 1, caplog.text
    return reasons[0]


def refresh(portal, rp: Rp, logged_in: LoggedIn) -> requests.Response:
    return requests.post(f"{portal.url}/token", auth=(rp.client_id, rp.secret), timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": logged_in.tokens["refresh_token"],
    })


def person_of(portal, device_id: str) -> str:
    with services(portal.app).sessions() as session:
        return session.get(DeviceRecord, device_id).person_id


def standing_consents(portal, person_id: str) -> list[list[str]]:
    with services(portal.app).sessions() as session:
        rows = session.scalars(select(Consent).where(Consent.person_id == person_id, Consent.revoked_at.is_(None)))
        return sorted(sorted(row.attributes) for row in rows)


# --- what openssl says --------------------------------------------------------------------------------


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if OPENSSL is None:
        pytest.fail("the openssl binary is needed for the CRL and OCSP checks")
    return subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=30, check=False)


def pem_file(directory: Path, name: str, certificate: x509.Certificate) -> Path:
    path = directory / f"{name}.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def crl_entry(portal, tmp_path: Path, certificate: x509.Certificate) -> str | None:
    """The reason ``openssl crl -text`` prints for ``certificate`` on the CRL the portal serves
    (``"none"`` when listed without one), or None when it is not listed."""
    crl = tmp_path / "smartphone-ca.crl"
    crl.write_bytes(requests.get(f"{portal.url}/pki/crl/smartphone-ca.crl", timeout=10).content)
    issuer = services(portal.app).pki.authority.certificate
    checked = openssl("crl", "-inform", "DER", "-in", crl, "-noout", "-CAfile", pem_file(tmp_path, "ca", issuer))
    assert "verify OK" in checked.stdout + checked.stderr, checked.stderr
    text = openssl("crl", "-inform", "DER", "-in", crl, "-noout", "-text").stdout
    serial = format(certificate.serial_number, "X")
    serial = serial if len(serial) % 2 == 0 else "0" + serial
    entry = re.search(rf"Serial Number: {serial}\n(.*?)(?=\n\s*Serial Number:|\n\s*Signature Algorithm|\Z)", text,
                      re.DOTALL)
    if entry is None:
        return None
    reason = re.search(r"CRL Reason Code:\s*\n\s*(.+)", entry.group(1))
    return reason.group(1).strip() if reason else "none"


def ocsp_answer(portal, tmp_path: Path, certificate: x509.Certificate) -> str:
    """``good``, or ``revoked <reason>``: the portal's OCSP answer for ``certificate``, as openssl reads it."""
    pki = services(portal.app).pki
    leaf = pem_file(tmp_path, f"leaf-{certificate.serial_number}", certificate)
    result = openssl("ocsp", "-issuer", pem_file(tmp_path, "issuer", pki.authority.certificate),
                     "-CAfile", pem_file(tmp_path, "root", pki.root), "-cert", leaf, "-url", f"{portal.url}/pki/ocsp",
                     "-resp_text")
    assert "Response verify OK" in result.stderr, result.stderr
    status = re.search(rf"{re.escape(str(leaf))}: (\w+)", result.stdout).group(1)
    if status != "revoked":
        return status
    reason = re.search(r"Reason: (\w+)", result.stdout).group(1)
    return f"revoked {reason}"


# --- a new phone ---------------------------------------------------------------------------------------


def test_a_new_phone_supersedes_the_old_one(world, portal, rps, caplog, tmp_path):
    shop, _clinic = rps
    old = enroll_phone(world, portal, "pixel")
    person = person_of(portal, old.enrollment.device_id)
    before = subs(portal, rps, old)
    held = log_in(portal, shop, old, scope=ATTRIBUTES)
    consents = standing_consents(portal, person)
    assert consents == [["address", "birthdate", "gender", "name"]]

    new = enroll_phone(world, portal, "galaxy")

    assert person_of(portal, new.enrollment.device_id) == person
    assert refused_reason(portal, shop, old, caplog) == "unknown_credential"
    assert refresh(portal, shop, held).json()["error"] == "invalid_grant"
    for certificate in (old.enrollment.auth_certificate, old.enrollment.sign_certificate):
        assert crl_entry(portal, tmp_path, certificate) == "Superseded"
        assert ocsp_answer(portal, tmp_path, certificate) == "revoked superseded"
    assert ocsp_answer(portal, tmp_path, new.enrollment.auth_certificate) == "good"
    assert subs(portal, rps, new) == before
    assert standing_consents(portal, person) == consents
    assert log_in(portal, shop, new, scope=ATTRIBUTES).userinfo["name"] == TARO.name


# --- a lost phone, then found ----------------------------------------------------------------------------


def test_a_lost_phone_is_suspended_by_the_card_and_resumed_when_found(world, portal, rps, caplog, tmp_path):
    shop, clinic = rps
    phone = enroll_phone(world, portal, "pixel")
    person = person_of(portal, phone.enrollment.device_id)
    before = subs(portal, rps, phone)
    held = log_in(portal, clinic, phone, scope=ATTRIBUTES)
    consents = standing_consents(portal, person)
    auth, sign = phone.enrollment.auth_certificate, phone.enrollment.sign_certificate
    laptop = PortalClient(portal.url)  # another device: only the card and the phone's id

    answer = suspend_phone(client=laptop, card=world.state.load_card("taro"), auth_pin=AUTH_PIN,
                           device_id=phone.enrollment.device_id)

    assert answer == {"status": "suspended"}
    assert refused_reason(portal, shop, phone, caplog) == "certificate_revoked"
    assert refresh(portal, clinic, held).json()["error"] == "invalid_grant"
    for certificate in (auth, sign):
        assert crl_entry(portal, tmp_path, certificate) == "Certificate Hold"
        assert ocsp_answer(portal, tmp_path, certificate) == "revoked certificateHold"

    answer = resume_phone(client=laptop, card=world.state.load_card("taro"), auth_pin=AUTH_PIN,
                          device_id=phone.enrollment.device_id)

    assert answer == {"status": "resumed", "signature_key": "reenroll"}
    assert crl_entry(portal, tmp_path, auth) is None
    assert ocsp_answer(portal, tmp_path, auth) == "good"
    assert crl_entry(portal, tmp_path, sign) == "Superseded"
    assert ocsp_answer(portal, tmp_path, sign) == "revoked superseded"
    assert subs(portal, rps, phone) == before
    assert standing_consents(portal, person) == consents
    # The old signature key is not trusted again: attributes wait for a new one.
    assert refused_reason(portal, clinic, phone, caplog, scope=ATTRIBUTES,
                          problem="signature-key-renewal-required") == "certificate_revoked"

    phone.enrollment = reenroll_signature_key(client=phone.client, element=phone.element,
                                              enrollment=phone.enrollment, card=world.state.load_card("taro"),
                                              sign_pin=SIGN_PIN)

    assert ocsp_answer(portal, tmp_path, phone.enrollment.sign_certificate) == "good"
    assert log_in(portal, clinic, phone, scope=ATTRIBUTES).userinfo["name"] == TARO.name
    assert person_of(portal, phone.enrollment.device_id) == person


def card_request(portal, world, *, card: str, device_id: str, action: str = "suspend",
                 signed_for: str | None = None) -> requests.Response:
    """A card-signed phone request made by hand, so that one part of it can be wrong."""
    started = requests.post(f"{portal.url}/device/v1/phones/challenges", json={}, timeout=10).json()
    holder = world.state.load_card(card)
    digest = phone_life_digest(action=action, device_id=signed_for or device_id,
                               challenge=b64url_decode(started["card_challenge"]))
    body = {"challenge_id": started["challenge_id"], "card": {
        "auth_certificate": base64.b64encode(holder.certificates.auth.public_bytes(serialization.Encoding.DER))
        .decode(),
        "auth_signature": b64url(holder.sign_digest(CardKey.AUTH, digest, pin=AUTH_PIN)),
    }}
    return requests.post(f"{portal.url}/device/v1/phones/{device_id}/{action}", json=body, timeout=10)


def test_a_suspension_signed_by_another_persons_card_is_refused(world, portal, rps, caplog, tmp_path):
    phone = enroll_phone(world, portal, "pixel")
    world.issue_card("hanako", HANAKO)
    enroll_phone(world, portal, "iphone", card="hanako")  # hanako is a person the portal knows

    response = card_request(portal, world, card="hanako", device_id=phone.enrollment.device_id)

    assert response.status_code == 403
    assert response.json()["type"] == PROBLEMS + "card-not-the-holders"
    assert "phone.card_rejected reason=not_the_holders" in caplog.text
    assert ocsp_answer(portal, tmp_path, phone.enrollment.auth_certificate) == "good"
    assert log_in(portal, rps[0], phone).claims["sub"]


def test_a_signature_key_vouched_for_by_another_persons_card_is_refused(world, portal, caplog):
    phone = enroll_phone(world, portal, "pixel")
    world.issue_card("hanako", HANAKO)
    enroll_phone(world, portal, "iphone", card="hanako")
    with pytest.raises(PortalError) as refused:
        reenroll_signature_key(client=phone.client, element=phone.element, enrollment=phone.enrollment,
                               card=world.state.load_card("hanako"), sign_pin=SIGN_PIN)
    assert (refused.value.status, refused.value.type) == (403, PROBLEMS + "card-not-the-holders")
    assert "signature_key.rejected reason=not_the_holders" in caplog.text
    assert log_in(portal, register(portal, "Third", "third.example"), phone, scope=ATTRIBUTES).userinfo["name"] == \
        TARO.name


def test_a_card_signature_for_another_phone_is_refused(world, portal, caplog):
    phone = enroll_phone(world, portal, "pixel")
    response = card_request(portal, world, card="taro", device_id=phone.enrollment.device_id, signed_for="other")
    assert response.status_code == 403
    assert response.json()["type"] == PROBLEMS + "card-rejected"
    assert "phone.card_rejected reason=signature_invalid" in caplog.text


def test_a_card_challenge_answers_once(world, portal, caplog):
    phone = enroll_phone(world, portal, "pixel")
    started = requests.post(f"{portal.url}/device/v1/phones/challenges", json={}, timeout=10).json()
    holder = world.state.load_card("taro")
    digest = phone_life_digest(action="suspend", device_id=phone.enrollment.device_id,
                               challenge=b64url_decode(started["card_challenge"]))
    body = {"challenge_id": started["challenge_id"], "card": {
        "auth_certificate": base64.b64encode(holder.certificates.auth.public_bytes(serialization.Encoding.DER))
        .decode(),
        "auth_signature": b64url(holder.sign_digest(CardKey.AUTH, digest, pin=AUTH_PIN)),
    }}
    url = f"{portal.url}/device/v1/phones/{phone.enrollment.device_id}/suspend"
    assert requests.post(url, json=body, timeout=10).status_code == 200
    replayed = requests.post(url, json=body, timeout=10)
    assert (replayed.status_code, replayed.json()["type"]) == (403, PROBLEMS + "card-rejected")
    assert "phone.card_rejected reason=challenge_unknown_or_used" in caplog.text


def test_resuming_a_phone_that_is_not_suspended_is_a_conflict(world, portal):
    phone = enroll_phone(world, portal, "pixel")
    response = card_request(portal, world, card="taro", device_id=phone.enrollment.device_id, action="resume")
    assert (response.status_code, response.json()["type"]) == (409, PROBLEMS + "phone-not-suspended")


def test_suspending_an_unknown_phone_is_404(world, portal):
    enroll_phone(world, portal, "pixel")
    response = card_request(portal, world, card="taro", device_id="no-such-phone")
    assert (response.status_code, response.json()["type"]) == (404, PROBLEMS + "unknown-phone")


@pytest.mark.parametrize("body", [[], {"challenge_id": "x"}, {"challenge_id": "x", "card": {"auth_certificate": "!"}},
                                  {"challenge_id": "x", "card": {"auth_certificate": "AAAA", "auth_signature": "AA"}}],
                         ids=["not-an-object", "no-card", "certificate-not-base64", "certificate-not-der"])
def test_a_malformed_card_request_is_400(portal, body):
    response = requests.post(f"{portal.url}/device/v1/phones/some-device/suspend", json=body, timeout=10)
    assert (response.status_code, response.json()["type"]) == (400, PROBLEMS + "invalid-device-request")


# --- card life events: renewal, a move, a reissue ------------------------------------------------------------


def test_card_renewal_keeps_the_person(world, portal, rps, caplog, tmp_path):
    old = enroll_phone(world, portal, "pixel")
    person = person_of(portal, old.enrollment.device_id)
    before = subs(portal, rps, old)
    log_in(portal, rps[0], old, scope=ATTRIBUTES)
    consents = standing_consents(portal, person)
    card_event(world, "renew")
    sync_revocations(portal.settings)

    assert refused_reason(portal, rps[0], old, caplog) == "certificate_revoked"
    for certificate in (old.enrollment.auth_certificate, old.enrollment.sign_certificate):
        assert crl_entry(portal, tmp_path, certificate) == "Superseded"
        assert ocsp_answer(portal, tmp_path, certificate) == "revoked superseded"
    renewed = enroll_phone(world, portal, "pixel")
    assert person_of(portal, renewed.enrollment.device_id) == person
    assert subs(portal, rps, renewed) == before
    assert standing_consents(portal, person) == consents


def test_a_move_changes_the_address_and_keeps_the_person(world, portal, rps, caplog, tmp_path):
    shop, _clinic = rps
    old = enroll_phone(world, portal, "pixel")
    person = person_of(portal, old.enrollment.device_id)
    before = subs(portal, rps, old)
    first = log_in(portal, shop, old, scope=ATTRIBUTES)
    consents = standing_consents(portal, person)
    card_event(world, "move")
    sync_revocations(portal.settings)

    assert crl_entry(portal, tmp_path, old.enrollment.sign_certificate) == "Affiliation Changed"
    assert ocsp_answer(portal, tmp_path, old.enrollment.sign_certificate) == "revoked affiliationChanged"
    assert ocsp_answer(portal, tmp_path, old.enrollment.auth_certificate) == "good"
    assert subs(portal, rps, old) == before  # the user-authentication certificate still stands
    assert refused_reason(portal, shop, old, caplog, scope=ATTRIBUTES,
                          problem="signature-key-renewal-required") == "certificate_revoked"

    moved = dataclasses.replace(old, enrollment=reenroll_signature_key(
        client=old.client, element=old.element, enrollment=old.enrollment, card=world.state.load_card("taro"),
        sign_pin=SIGN_PIN,
    ))
    after = log_in(portal, shop, moved, scope=ATTRIBUTES)

    assert after.userinfo["address"] == {"formatted": NEW_ADDRESS}
    evidence = after.userinfo["verified_claims"]["verification"]
    assert int(evidence["evidence"][0]["serial_number"], 16) == moved.enrollment.sign_certificate.serial_number
    assert evidence["time"] >= first.userinfo["verified_claims"]["verification"]["time"]
    assert subs(portal, rps, moved) == before
    assert standing_consents(portal, person) == consents


def test_a_lost_cards_reissue_keeps_the_person(world, portal, rps, caplog, tmp_path):
    old = enroll_phone(world, portal, "pixel")
    person = person_of(portal, old.enrollment.device_id)
    before = subs(portal, rps, old)
    card_event(world, "reissue")
    sync_revocations(portal.settings)

    assert refused_reason(portal, rps[0], old, caplog) == "certificate_revoked"
    for certificate in (old.enrollment.auth_certificate, old.enrollment.sign_certificate):
        assert crl_entry(portal, tmp_path, certificate) == "Key Compromise"
        assert ocsp_answer(portal, tmp_path, certificate) == "revoked keyCompromise"
    reissued = enroll_phone(world, portal, "pixel")
    assert person_of(portal, reissued.enrollment.device_id) == person
    assert subs(portal, rps, reissued) == before


def test_a_suspended_phone_cannot_enroll_a_new_signature_key(world, portal, caplog):
    phone = enroll_phone(world, portal, "pixel")
    suspend_phone(client=PortalClient(portal.url), card=world.state.load_card("taro"), auth_pin=AUTH_PIN,
                  device_id=phone.enrollment.device_id)
    with pytest.raises(PortalError) as refused:
        reenroll_signature_key(client=phone.client, element=phone.element, enrollment=phone.enrollment,
                               card=world.state.load_card("taro"), sign_pin=SIGN_PIN)
    assert (refused.value.status, refused.value.type) == (403, PROBLEMS + "assertion-rejected")
    assert "signature_key.rejected reason=certificate_revoked" in caplog.text


def test_a_signature_key_reenrollment_answers_once(world, portal):
    phone = enroll_phone(world, portal, "pixel")
    sent = []
    complete = phone.client.complete_signature_key

    def keep(rekey_id, body):
        sent.append((rekey_id, body))
        return complete(rekey_id, body)

    phone.client.complete_signature_key = keep
    reenroll_signature_key(client=phone.client, element=phone.element, enrollment=phone.enrollment,
                           card=world.state.load_card("taro"), sign_pin=SIGN_PIN)
    with pytest.raises(PortalError) as refused:
        complete(*sent[0])
    assert (refused.value.status, refused.value.type) == (409, PROBLEMS + "device-challenge-used")


def test_openapi_describes_the_phone_life_endpoints(portal):
    document = requests.get(f"{portal.url}/device/v1/openapi.json", timeout=10).json()
    operations = {operation["operationId"] for path in document["paths"].values() for operation in path.values()}
    assert {"newPhoneChallenge", "suspendPhone", "resumePhone", "startSignatureKey", "completeSignatureKey"} <= \
        operations


def test_a_revoked_card_cannot_suspend_a_phone(world, portal, caplog):
    phone = enroll_phone(world, portal, "pixel")
    world.state.load_jlis().revoke_card(world.state.card_certificates("taro"), reason=x509.ReasonFlags.key_compromise,
                                        now=datetime.now(UTC))
    sync_revocations(portal.settings)
    response = card_request(portal, world, card="taro", device_id=phone.enrollment.device_id)
    assert (response.status_code, response.json()["type"]) == (403, PROBLEMS + "card-rejected")
    assert "phone.card_rejected reason=certificate_revoked" in caplog.text
