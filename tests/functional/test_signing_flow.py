"""The signing flow over real HTTP: the RP pushes documents, the phone signs them, the RP fetches the results.

PAR with RFC 9396 ``document_signature`` details (one document by digest only, one PDF) → the
login page → the phone looks the transaction up naming its credential, approves with its login
assertion and one signature per document by its SE *signature* key → code → token (with the
granted ``authorization_details``) → ``GET /signing/v1/results`` → the detached CAdES signature,
the signed PDF and the signed-document assertion, judged by the portal's verifiers and OpenSSL.
On SQLite with the in-process store and on PostgreSQL with Redis.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import redis
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from documents import one_page_pdf
from enrollment_portal import AUTH_PIN, SIGN_PIN, running_portal
from sqlalchemy import select
from test_login_ceremony import PROBLEMS, REDIRECT_URI, Login, Phone, assert_problem, finish_login, redeem, start_login

from idp.app import services
from idp.audit import AuditLog
from idp.ceremonies.phone_life import PhoneLife
from idp.clock import FixedClock, SystemClock
from idp.signing.http import SIGNING_EXTENSION
from idp.signing.records import SignatureResult
from smartphone.portal_client import PortalClient, PortalError, approve, b64url_decode, enroll
from smartphone.webauthn_data import b64url

RESULTS = "/signing/v1/results"
CONTRACT = b"Lease contract, flat 302: the tenant agrees to every clause.\n"


@pytest.fixture
def portal(world, tmp_path, stores):
    with running_portal(world, tmp_path / "instance", clock=FixedClock(datetime.now(UTC)), **stores) as portal:
        yield portal


@pytest.fixture
def phone(world, portal) -> Phone:
    element, card = world.state.load_phone("pixel"), world.state.load_card("taro")
    client = PortalClient(portal.url)
    enrollment = enroll(client=client, element=element, card=card, auth_pin=AUTH_PIN, sign_pin=SIGN_PIN)
    return Phone(client=client, element=element, enrollment=enrollment)


@pytest.fixture
def shop(portal):
    return services(portal.app).oidc.clients.register(
        name="Demo Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic", scopes=["openid", "sign"],
        now=datetime.now(UTC),
    )




PDF = one_page_pdf("Terms of sale: the buyer agrees to every clause.")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def two_documents() -> list[dict]:
    return [{
        "type": "document_signature",
        "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1",
        "documentDigests": [
            {"label": "Lease contract", "hash": _b64(hashlib.sha256(CONTRACT).digest())},
            {"label": "Terms of sale", "hash": _b64(hashlib.sha256(PDF).digest()), "document": _b64(PDF)},
        ],
    }]


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def push(portal, shop, details) -> requests.Response:
    """POST /par for ``shop`` with ``details`` as authorization_details; the raw answer."""
    verifier, challenge = _pkce()
    response = requests.post(f"{portal.url}/par", auth=(shop.client.client_id, shop.client_secret), data={
        "response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid sign", "state": secrets.token_urlsafe(16), "nonce": secrets.token_urlsafe(16),
        "code_challenge": challenge, "code_challenge_method": "S256",
        "authorization_details": json.dumps(details),
    }, timeout=10)
    response.verifier = verifier
    return response


def start_signing(portal, shop, details=None) -> Login:
    """The RP pushes the signing request; the browser opens the login page with its request_uri."""
    pushed = push(portal, shop, two_documents() if details is None else details)
    assert pushed.status_code == 201, pushed.text
    browser = requests.Session()
    query = {"client_id": shop.client.client_id, "request_uri": pushed.json()["request_uri"]}
    page = browser.get(f"{portal.url}/authorize?{urlencode(query)}", allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.text
    return Login(browser=browser, verifier=pushed.verifier, state="", nonce="", page=page.text)


def look_up(phone: Phone, login: Login) -> dict:
    return phone.client.lookup_transaction(qr=login.qr_payload, credential_id=phone.enrollment.auth_credential_id)


def approve_with(phone: Phone, transaction: dict, signatures: list[bytes]) -> dict:
    """The phone's approval with a login assertion by its auth key and the given document signatures."""
    options = transaction["public_key"]
    assertion = phone.element.get_assertion(
        credential_id=phone.enrollment.auth_credential_id, rp_id=options["rpId"],
        challenge=b64url_decode(options["challenge"]), origin=phone.client.base_url,
    )
    return phone.client.approve_transaction(transaction["transaction_id"], assertion=assertion,
                                            consent_signature=None, document_signatures=signatures)


def by_signature_key(phone: Phone, document: dict) -> bytes:
    return phone.element.sign_digest(credential_id=phone.enrollment.sign_credential_id,
                                     digest=b64url_decode(document["to_be_signed"]))


def results(portal, access_token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
    return requests.get(f"{portal.url}{RESULTS}", headers=headers, timeout=10)


def test_signing_request_yields_cades_pades_and_an_assertion(portal, shop, phone, tmp_path):
    login = start_signing(portal, shop)
    assert "Lease contract" in login.page
    assert "Terms of sale" in login.page
    transaction = look_up(phone, login)
    assert transaction["kind"] == "signing"
    assert transaction["rp_name"] == "Demo Shop"
    assert transaction["verification_code"] in login.page
    documents = transaction["documents"]
    assert [(d["label"], d["signature_format"]) for d in documents] == [
        ("Lease contract", "cades"), ("Terms of sale", "pades"),
    ]
    assert documents[0]["digest_prefix"] == hashlib.sha256(CONTRACT).hexdigest()[:16]
    assert documents[1]["digest_prefix"] == hashlib.sha256(PDF).hexdigest()[:16]

    assert phone.approve(transaction) == {"status": "approved"}
    tokens = redeem(portal, shop, login, finish_login(portal, login)["code"][0])
    granted = tokens["authorization_details"]
    assert granted == [{
        "type": "document_signature",
        "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1",
        "documentDigests": [
            {"label": "Lease contract", "hash": _b64(hashlib.sha256(CONTRACT).digest())},
            {"label": "Terms of sale", "hash": _b64(hashlib.sha256(PDF).digest())},
        ],
    }]

    answer = results(portal, tokens["access_token"])
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    assert body["authorization_details"] == granted
    cades, pades = body["documents"]
    assert (cades["label"], cades["signature_format"]) == ("Lease contract", "cades")
    assert (pades["label"], pades["signature_format"]) == ("Terms of sale", "pades")

    service = portal.app.extensions[SIGNING_EXTENSION]
    signature = base64.b64decode(cades["signature"])
    cades_verdict = service.verify_cades(signature=signature, document=CONTRACT)
    assert cades_verdict.valid, cades_verdict.detail
    assert cades_verdict.signer == phone.enrollment.sign_certificate
    signed_pdf = base64.b64decode(pades["signed_pdf"])
    pades_verdict = service.verify_pades(signed_pdf)
    assert pades_verdict.valid, pades_verdict.detail
    assert pades_verdict.signer == phone.enrollment.sign_certificate
    assertion = service.verify_assertion(body["assertion"], document=CONTRACT)
    assert assertion.valid, assertion.detail
    claims = assertion.claims
    assert claims["aud"] == shop.client.client_id
    assert [entry["label"] for entry in claims["documents"]] == ["Lease contract", "Terms of sale"]
    id_token_sub = requests.get(f"{portal.url}/userinfo", timeout=10,
                                headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()["sub"]
    assert claims["sub"] == id_token_sub

    openssl = shutil.which("openssl")
    assert openssl is not None
    (tmp_path / "signature.der").write_bytes(signature)
    (tmp_path / "contract.txt").write_bytes(CONTRACT)
    root = portal.settings.instance / "pki" / "portal-root.crt.pem"
    done = subprocess.run(
        [openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "signature.der"),
         "-content", str(tmp_path / "contract.txt"), "-CAfile", str(root), "-out", "/dev/null"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Verification successful" in done.stderr


def test_a_signature_is_audited_with_who_signed_which_digests(portal, shop, phone):
    """An auditor can answer "who signed what": the phone, the person, the RP and each document's
    SHA-256, in the transaction storing the results; no label (the RP's words) and no attribute."""
    login = start_signing(portal, shop)
    assert phone.approve(look_up(phone, login)) == {"status": "approved"}
    [record] = [entry for entry in AuditLog(services(portal.app).sessions, clock=SystemClock()).export()
                if entry.event == "signature"]
    assert record.actor == f"phone:{phone.enrollment.device_id}"
    assert record.subject[1] == f"client:{shop.client.client_id}"
    assert record.subject[0].startswith("person:")
    assert record.details["documents"] == [hashlib.sha256(CONTRACT).hexdigest(), hashlib.sha256(PDF).hexdigest()]
    assert "Lease contract" not in json.dumps(record.details)
    assert AuditLog(services(portal.app).sessions, clock=SystemClock()).verify().intact


@pytest.mark.parametrize(("change", "where"), [
    (lambda details: details[0].update(type="payment_initiation"), "type"),
    (lambda details: details[0]["documentDigests"][0].update(hash=_b64(b"short")), "hash size"),
    (lambda details: details[0]["documentDigests"][1].update(hash=_b64(hashlib.sha256(CONTRACT).digest())),
     "PDF not matching its digest"),
    (lambda details: details[0]["documentDigests"][1].update(label="Lease contract"), "repeated label"),
])
def test_invalid_authorization_details_are_refused_at_par(portal, shop, change, where):
    details = two_documents()
    change(details)
    refused = push(portal, shop, details)
    assert refused.status_code == 400, where
    assert refused.json()["error"] == "invalid_authorization_details", where


def test_a_signing_request_without_the_sign_scope_is_refused(portal, shop):
    _verifier, challenge = _pkce()
    refused = requests.post(f"{portal.url}/par", auth=(shop.client.client_id, shop.client_secret), data={
        "response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid", "nonce": "n-1", "code_challenge": challenge, "code_challenge_method": "S256",
        "authorization_details": json.dumps(two_documents()),
    }, timeout=10)
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid_scope",
                              "error_description": "a signing request (document_signature) asks for the sign scope"}


def test_a_client_not_registered_for_signing_cannot_push_a_signing_request(portal):
    login_only = services(portal.app).oidc.clients.register(
        name="Login Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic", scopes=["openid"],
        now=datetime.now(UTC),
    )
    refused = push(portal, login_only, two_documents())
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid_scope", "error_description": "scope not allowed for this client: sign"}


def test_a_signing_request_with_prompt_none_is_refused(portal, shop):
    """A silent answer from the portal session would grant documents the user never saw."""
    _verifier, challenge = _pkce()
    refused = requests.post(f"{portal.url}/par", auth=(shop.client.client_id, shop.client_secret), data={
        "response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid sign", "nonce": "n-1", "code_challenge": challenge, "code_challenge_method": "S256",
        "prompt": "none", "authorization_details": json.dumps(two_documents()),
    }, timeout=10)
    assert refused.status_code == 400
    assert refused.json() == {"error": "interaction_required",
                              "error_description": "a signing request needs the user: prompt=none cannot sign"}


def test_the_sign_scope_without_documents_is_refused(portal, shop):
    _verifier, challenge = _pkce()
    refused = requests.post(f"{portal.url}/par", auth=(shop.client.client_id, shop.client_secret), data={
        "response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid sign", "nonce": "n-1", "code_challenge": challenge, "code_challenge_method": "S256",
    }, timeout=10)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"
    assert "document_signature" in refused.json()["error_description"]


def test_authorization_details_without_par_are_refused(portal, shop):
    _verifier, challenge = _pkce()
    query = {"response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
             "scope": "openid", "state": "s-123", "nonce": "n-1", "code_challenge": challenge,
             "code_challenge_method": "S256", "authorization_details": json.dumps(two_documents()[:1])}
    response = requests.get(f"{portal.url}/authorize?{urlencode(query)}", allow_redirects=False, timeout=10)
    assert response.status_code in {302, 303}
    answer = parse_qs(urlsplit(response.headers["Location"]).query)
    assert answer["error"] == ["invalid_request"]
    assert answer["state"] == ["s-123"]
    assert answer["iss"] == [portal.url]


def test_document_signed_by_the_authentication_key_is_refused(portal, shop, phone):
    login = start_signing(portal, shop)
    transaction = look_up(phone, login)
    auth_key = phone.element._find(phone.enrollment.auth_credential_id).private_key  # a tampered app
    signatures = [by_signature_key(phone, transaction["documents"][0]),
                  auth_key.sign(b64url_decode(transaction["documents"][1]["to_be_signed"]),
                                ec.ECDSA(Prehashed(hashes.SHA256())))]
    with pytest.raises(PortalError) as refused:
        approve_with(phone, transaction, signatures)
    assert_problem(refused.value, 403, "document-signature-rejected")


def test_signature_over_another_digest_is_refused(portal, shop, phone):
    login = start_signing(portal, shop)
    transaction = look_up(phone, login)
    first, second = transaction["documents"]
    swapped = [by_signature_key(phone, second), by_signature_key(phone, first)]
    with pytest.raises(PortalError) as refused:
        approve_with(phone, transaction, swapped)
    assert_problem(refused.value, 403, "document-signature-rejected")


def test_missing_document_signature_is_refused(portal, shop, phone):
    login = start_signing(portal, shop)
    transaction = look_up(phone, login)
    with pytest.raises(PortalError) as refused:
        approve_with(phone, transaction, [by_signature_key(phone, transaction["documents"][0])])
    assert_problem(refused.value, 400, "invalid-device-request")


def test_lookup_of_a_signing_request_without_credential_is_refused(portal, shop, phone):
    login = start_signing(portal, shop)
    with pytest.raises(PortalError) as refused:
        phone.lookup(login)
    assert_problem(refused.value, 400, "invalid-device-request")


def test_declined_signing_request_ends_with_access_denied(portal, shop, phone):
    login = start_signing(portal, shop)
    transaction = look_up(phone, login)
    phone.client.decline_transaction(transaction["transaction_id"])
    response = login.browser.get(portal.url + login.continue_url, allow_redirects=False, timeout=10)
    answer = parse_qs(urlsplit(response.headers["Location"]).query)
    assert answer["error"] == ["access_denied"]


def test_results_refuse_a_missing_or_unknown_token(portal):
    for token in (None, "not-a-token"):
        refused = results(portal, token)
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_token"
        assert refused.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_results_refuse_another_clients_token(portal, shop, phone):
    login = start_signing(portal, shop)
    approve(client=phone.client, element=phone.element, enrollment=phone.enrollment,
            transaction=look_up(phone, login))
    redeem(portal, shop, login, finish_login(portal, login)["code"][0])
    other = services(portal.app).oidc.clients.register(
        name="Other Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic",
        scopes=["openid"], now=datetime.now(UTC),
    )
    other_login = start_login(portal, other)
    phone.approve(phone.lookup(other_login))
    other_tokens = redeem(portal, other, other_login, finish_login(portal, other_login)["code"][0])
    refused = results(portal, other_tokens["access_token"])
    assert refused.status_code == 404
    assert refused.json()["type"] == PROBLEMS + "signing-results-not-found"


def test_authorization_details_pushed_twice_are_refused(portal, shop):
    _verifier, challenge = _pkce()
    refused = requests.post(f"{portal.url}/par", auth=(shop.client.client_id, shop.client_secret), data={
        "response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid sign", "nonce": "n-1", "code_challenge": challenge, "code_challenge_method": "S256",
        "authorization_details": [json.dumps(two_documents())] * 2,
    }, timeout=10)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"


def test_code_of_a_plain_login_has_no_authorization_details(portal, shop, phone):
    login = start_login(portal, shop)
    phone.approve(phone.lookup(login))
    tokens = redeem(portal, shop, login, finish_login(portal, login)["code"][0])
    assert "authorization_details" not in tokens
    refused = results(portal, tokens["access_token"])
    assert refused.status_code == 404
    assert refused.json()["type"] == PROBLEMS + "signing-results-not-found"


# --- what goes wrong on the way: each refusal with its exact error, and nothing stored twice ----------


def _stored(portal) -> list[tuple[str, str | None]]:
    """Every signature_results row: its client and the grant it is bound to."""
    with services(portal.app).sessions() as session:
        return [(row.client_id, row.grant_id) for row in session.scalars(select(SignatureResult))]


def _start_signing_with_state(portal, shop) -> Login:
    """``start_signing`` with a known ``state``, for the tests that read it back at the RP."""
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(16)
    pushed = requests.post(f"{portal.url}/par", auth=(shop.client.client_id, shop.client_secret), data={
        "response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid sign", "state": state, "nonce": secrets.token_urlsafe(16), "code_challenge": challenge,
        "code_challenge_method": "S256", "authorization_details": json.dumps(two_documents()),
    }, timeout=10)
    assert pushed.status_code == 201, pushed.text
    browser = requests.Session()
    query = {"client_id": shop.client.client_id, "request_uri": pushed.json()["request_uri"]}
    page = browser.get(f"{portal.url}/authorize?{urlencode(query)}", allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.text
    return Login(browser=browser, verifier=verifier, state=state, nonce="", page=page.text)


def _approval_body(phone: Phone, transaction: dict, signatures: list[bytes]) -> dict:
    """The JSON the phone posts to approve: a login assertion and the document signatures."""
    options = transaction["public_key"]
    assertion = phone.element.get_assertion(
        credential_id=phone.enrollment.auth_credential_id, rp_id=options["rpId"],
        challenge=b64url_decode(options["challenge"]), origin=phone.client.base_url,
    )
    return {"assertion": assertion, "consent_signature": None,
            "document_signatures": [b64url(signature) for signature in signatures]}


def _post_approval(portal, transaction: dict, body: dict) -> requests.Response:
    return requests.post(f"{portal.url}/device/v1/transactions/{transaction['transaction_id']}/approve",
                         json=body, timeout=30)


def _redeem_raw(portal, client, secret: str, login: Login, code: str) -> requests.Response:
    return requests.post(f"{portal.url}/token", auth=(client.client_id, secret), timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
        "code_verifier": login.verifier,
    })


@pytest.mark.parametrize("revocation", [
    (x509.ReasonFlags.key_compromise, "revoked"), (x509.ReasonFlags.certificate_hold, "on_hold"),
], ids=["revoked", "on-hold"])
def test_signature_certificate_revoked_before_approval_is_refused(portal, shop, phone, revocation, caplog):
    reason, status = revocation
    login = start_signing(portal, shop)
    transaction = look_up(phone, login)
    services(portal.app).pki.revoke(phone.enrollment.sign_certificate.serial_number, reason)
    body = _approval_body(phone, transaction, [by_signature_key(phone, d) for d in transaction["documents"]])
    with caplog.at_level(logging.WARNING, logger="idp.ceremonies"):
        refused = _post_approval(portal, transaction, body)
    assert refused.status_code == 403
    assert refused.json()["type"] == PROBLEMS + "signature-key-renewal-required"
    assert refused.json()["signature_certificate"] == {"status": status, "reason": reason.value}
    assert "signing.rejected reason=certificate_revoked" in caplog.text
    assert _stored(portal) == []
    status_url = re.search(r'data-status-url="([^"]+)"', login.page).group(1)
    # A refused signature leaves the transaction open: the RP still waits, nothing was decided.
    assert login.browser.get(portal.url + status_url, timeout=10).json()["status"] == "scanned"


def test_suspended_phone_cannot_sign(portal, shop, phone):
    login = start_signing(portal, shop)
    transaction = look_up(phone, login)
    found = services(portal.app)
    PhoneLife(sessions=found.sessions, pki=found.pki, clock=found.clock,
              revoke_grants=found.oidc.revoke_device_grants).suspend(phone.enrollment.device_id, actor="operator")
    with pytest.raises(PortalError) as refused:
        phone.approve(transaction)
    assert_problem(refused.value, 403, "assertion-rejected")  # its authentication certificate is on hold first
    assert _stored(portal) == []


def test_signing_transaction_approved_after_it_expired_is_refused(portal, shop, phone):
    login = _start_signing_with_state(portal, shop)
    transaction = look_up(phone, login)
    services(portal.app).clock.advance(portal.settings.login.transaction_ttl + timedelta(seconds=1))
    with pytest.raises(PortalError) as refused:
        phone.approve(transaction)
    assert_problem(refused.value, 410, "transaction-expired")
    assert _stored(portal) == []
    answer = finish_login(portal, login)
    assert answer["error"] == ["access_denied"]
    assert answer["state"] == [login.state]
    assert "code" not in answer


def test_code_of_a_signing_request_redeemed_after_it_expired_is_refused(portal, shop, phone, stores):
    login = start_signing(portal, shop)
    phone.approve(look_up(phone, login))
    code = finish_login(portal, login)["code"][0]
    services(portal.app).clock.advance(portal.settings.oidc.code_ttl + timedelta(seconds=1))
    if stores.get("redis_url"):  # Redis keeps its own time: let the code's TTL run out there too
        store = redis.Redis.from_url(stores["redis_url"])
        for key in store.scan_iter(match=f"{stores['redis_prefix']}code:*"):
            store.pexpire(key, 1)
        time.sleep(0.05)
    refused = _redeem_raw(portal, shop.client, shop.client_secret, login, code)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert _stored(portal) == [(shop.client.client_id, None)] * 2  # signed, never bound to a grant


def test_same_approval_sent_twice_is_refused_and_stores_once(portal, shop, phone):
    login = start_signing(portal, shop)
    transaction = look_up(phone, login)
    body = _approval_body(phone, transaction, [by_signature_key(phone, d) for d in transaction["documents"]])
    first = _post_approval(portal, transaction, body)
    assert first.status_code == 200, first.text
    replayed = _post_approval(portal, transaction, body)
    assert replayed.status_code == 409
    assert replayed.headers["Content-Type"] == "application/problem+json"
    assert replayed.json()["type"] == PROBLEMS + "transaction-closed"
    assert _stored(portal) == [(shop.client.client_id, None)] * 2


def test_assertion_of_a_refused_approval_cannot_carry_other_signatures(portal, shop, phone):
    login = start_signing(portal, shop)
    transaction = look_up(phone, login)
    first, second = transaction["documents"]
    refused_body = _approval_body(phone, transaction, [by_signature_key(phone, second), by_signature_key(phone, first)])
    refused = _post_approval(portal, transaction, refused_body)
    assert (refused.status_code, refused.json()["type"]) == (403, PROBLEMS + "document-signature-rejected")
    replayed = dict(refused_body, document_signatures=[b64url(by_signature_key(phone, first)),
                                                         b64url(by_signature_key(phone, second))])
    again = _post_approval(portal, transaction, replayed)
    assert (again.status_code, again.json()["type"]) == (403, PROBLEMS + "assertion-rejected")
    assert _stored(portal) == []
    assert phone.approve(transaction) == {"status": "approved"}  # a fresh assertion still may


def test_code_of_a_signing_request_redeemed_by_another_client_is_refused_and_burnt(portal, shop, phone):
    other = services(portal.app).oidc.clients.register(
        name="Other Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic", scopes=["openid", "sign"],
        now=datetime.now(UTC),
    )
    login = start_signing(portal, shop)
    phone.approve(look_up(phone, login))
    code = finish_login(portal, login)["code"][0]
    stolen = _redeem_raw(portal, other.client, other.client_secret, login, code)
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    late = _redeem_raw(portal, shop.client, shop.client_secret, login, code)
    assert late.status_code == 400
    assert late.json()["error"] == "invalid_grant"
    assert _stored(portal) == [(shop.client.client_id, None)] * 2  # bound to no one's grant


def _push_raw(portal, shop, authorization_details: str) -> requests.Response:
    _verifier, challenge = _pkce()
    return requests.post(f"{portal.url}/par", auth=(shop.client.client_id, shop.client_secret), data={
        "response_type": "code", "client_id": shop.client.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid sign", "nonce": "n-1", "code_challenge": challenge, "code_challenge_method": "S256",
        "authorization_details": authorization_details,
    }, timeout=30)


def _details_with(documents: list[dict]) -> str:
    return json.dumps([{"type": "document_signature", "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1",
                        "documentDigests": documents}])


def _pdf_entry(label: str, pdf: bytes) -> dict:
    return {"label": label, "hash": _b64(hashlib.sha256(pdf).digest()), "document": _b64(pdf)}


_LARGE_PDF = b"%PDF-1.7\n" + b"\x00" * (600 * 1024)
"""Over the 512 KiB inline limit, yet the pushed request stays under the 1 MiB body limit."""
_HUGE_PDF = b"%PDF-1.7\n" + b"\x00" * (900 * 1024)
"""Its base64 alone makes the pushed request larger than the 1 MiB body limit."""
_NOT_A_PDF = b"Lease contract as plain text\n"


@pytest.mark.parametrize(("raw", "status", "error"), [
    ('[{"type": "document_signature",', 400, "invalid_authorization_details"),
    (json.dumps({"type": "document_signature"}), 400, "invalid_authorization_details"),
    (_details_with([{"label": f"Contract {n}", "hash": _b64(hashlib.sha256(b"%d" % n).digest())}
                    for n in range(11)]), 400, "invalid_authorization_details"),
    (_details_with([]), 400, "invalid_authorization_details"),
    (_details_with([{"label": "Lease\u202econtract", "hash": _b64(hashlib.sha256(CONTRACT).digest())}]), 400,
     "invalid_authorization_details"),
    (_details_with([{"label": "Lease contract", "hash": "not base64!"}]), 400, "invalid_authorization_details"),
    (_details_with([_pdf_entry("Lease contract", _NOT_A_PDF)]), 400, "invalid_authorization_details"),
    (_details_with([_pdf_entry("Large", _LARGE_PDF)]), 400, "invalid_authorization_details"),
    (_details_with([_pdf_entry("Huge", _HUGE_PDF)]), 413, "invalid_request"),
], ids=["not-json", "not-an-array", "eleven-documents", "no-documents", "bidi-override-in-label", "hash-not-base64",
        "document-not-a-pdf", "pdf-over-512-kib", "request-over-1-mib"])
def test_malformed_or_oversized_signing_requests_are_refused_at_par(portal, shop, raw, status, error):
    refused = _push_raw(portal, shop, raw)
    assert refused.status_code == status
    assert refused.json()["error"] == error
