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
import secrets
import shutil
import subprocess
from datetime import UTC, datetime
from io import BytesIO
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from enrollment_portal import AUTH_PIN, SIGN_PIN, running_portal
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.writer import PdfFileWriter
from test_login_ceremony import PROBLEMS, REDIRECT_URI, Login, Phone, assert_problem, finish_login, redeem, start_login

from idp.app import services
from idp.clock import FixedClock
from idp.signing.http import SIGNING_EXTENSION
from smartphone.portal_client import PortalClient, PortalError, approve, b64url_decode, enroll

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
        name="Demo Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic", scopes=["openid"],
        now=datetime.now(UTC),
    )


def _pdf(text: str) -> bytes:
    """A one-page PDF, as an RP would send it."""
    writer = PdfFileWriter()
    content = writer.add_object(generic.StreamObject(stream_data=f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()))
    font = generic.DictionaryObject({
        pdf_name("/Type"): pdf_name("/Font"), pdf_name("/Subtype"): pdf_name("/Type1"),
        pdf_name("/BaseFont"): pdf_name("/Helvetica"),
    })
    writer.insert_page(generic.DictionaryObject({
        pdf_name("/Type"): pdf_name("/Page"),
        pdf_name("/MediaBox"): generic.ArrayObject([generic.NumberObject(n) for n in (0, 0, 595, 842)]),
        pdf_name("/Contents"): content,
        pdf_name("/Resources"): generic.DictionaryObject({
            pdf_name("/Font"): generic.DictionaryObject({pdf_name("/F1"): font}),
        }),
    }))
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


PDF = _pdf("Terms of sale: the buyer agrees to every clause.")


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
        "scope": "openid", "state": secrets.token_urlsafe(16), "nonce": secrets.token_urlsafe(16),
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
        "scope": "openid", "nonce": "n-1", "code_challenge": challenge, "code_challenge_method": "S256",
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
