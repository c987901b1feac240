"""Signing a document end to end over real HTTP: the portal under gunicorn (2 workers, Redis,
PostgreSQL), a simulated phone enrolled with a simulated card, and a relying party that uses only
the portal's public HTTP APIs, as a third-party website would: PAR with RFC 9396
``authorization_details`` (a PDF and a digest-only document) → the login page in a browser → the
phone looks the request up and approves it → the code → ``/token`` → ``GET /signing/v1/results``.

What comes back is judged by others than the portal's own code: pyHanko's validator (the signed
PDF intact, trusted against the portal root fetched from ``/pki``, with a trusted timestamp),
``openssl cms -verify`` (the detached CAdES signature), joserfc against ``/jwks`` (the
signed-document assertion); then ``POST /signing/verify`` and ``idp verify`` say valid, and say
``document_modified`` for a PDF changed after signing.

The world (``world.py``) is built once for this module; the ceremony runs once and its results are
shared by the tests below it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from asn1crypto import x509 as asn1_x509
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from documents import one_page_pdf
from joserfc import jwt
from joserfc.jwk import KeySet
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.dss import DocumentSecurityStore
from world import BIN, RegisteredClient, World, login_world, qr_payload

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SHA256_OID = "2.16.840.1.101.3.4.2.1"
SIGNING_SCOPES = ("openid", "sign")
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never fetched: the RP reads the code from the Location header
CONTRACT = "賃貸借契約書: 借主は本契約の全条項に同意する。\n".encode() * 20




PDF = one_page_pdf("Terms of sale: the buyer agrees to every clause.")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def world(tmp_path_factory, postgres_url, redis_url):
    with login_world(tmp_path_factory.mktemp("signing-e2e"), admin_database_url=postgres_url,
                     redis_url=redis_url) as world:
        yield world


@dataclass
class Signed:
    """What the RP holds after the ceremony: the token response, the results and the portal's metadata."""

    client: RegisteredClient
    metadata: dict[str, Any]
    tokens: dict[str, Any]
    results: dict[str, Any]
    root_der: bytes
    details: list[dict[str, Any]]
    secrets: list[str]
    """The code, the PKCE verifier, the tokens, the assertion and the client secret: never in a log."""


@pytest.fixture(scope="module")
def signed(world: World) -> Signed:
    """One signing ceremony, driven as an RP, a browser and the phone would drive it."""
    metadata = requests.get(world.portal.url + "/.well-known/openid-configuration", timeout=10).json()
    assert "document_signature" in metadata["authorization_details_types_supported"]
    # A website registered for signing: the sign scope (as at the Digital Authentication App) beside openid.
    client = world.portal.add_client("Lease Shop", [REDIRECT_URI], scopes=SIGNING_SCOPES)
    redirect_uri = client.redirect_uris[0]
    details = [{
        "type": "document_signature",
        "hashAlgorithmOID": SHA256_OID,
        "documentDigests": [
            {"label": "Terms of sale", "hash": _b64(hashlib.sha256(PDF).digest()), "document": _b64(PDF)},
            {"label": "Lease contract", "hash": _b64(hashlib.sha256(CONTRACT).digest())},
        ],
    }]
    verifier, state, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    pushed = requests.post(metadata["pushed_authorization_request_endpoint"], auth=(client.client_id,
                           client.client_secret), timeout=10, data={
        "response_type": "code", "client_id": client.client_id, "redirect_uri": redirect_uri,
        "scope": " ".join(SIGNING_SCOPES),
        "state": state, "nonce": nonce, "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256", "authorization_details": json.dumps(details),
    })
    assert pushed.status_code == 201, pushed.text

    browser = requests.Session()
    query = {"client_id": client.client_id, "request_uri": pushed.json()["request_uri"]}
    page = browser.get(f"{metadata['authorization_endpoint']}?{urlencode(query)}", timeout=10)
    assert page.status_code == 200, page.text
    assert "Terms of sale" in page.text
    assert "Lease contract" in page.text

    phone = world.phone
    transaction = phone.client.lookup_transaction(qr=qr_payload(page.text),
                                                  credential_id=phone.enrollment.auth_credential_id)
    assert transaction["kind"] == "signing"
    assert transaction["rp_name"] == "Lease Shop"
    assert transaction["verification_code"] in page.text
    assert [(d["label"], d["signature_format"], d["digest_prefix"]) for d in transaction["documents"]] == [
        ("Terms of sale", "pades", hashlib.sha256(PDF).hexdigest()[:16]),
        ("Lease contract", "cades", hashlib.sha256(CONTRACT).hexdigest()[:16]),
    ]
    assert phone.approve(transaction) == {"status": "approved"}

    redirect = browser.get(world.portal.url + _attribute(page.text, "data-continue-url"), allow_redirects=False,
                           timeout=10)
    assert redirect.status_code in {302, 303}, redirect.text
    callback = redirect.headers["Location"]
    assert callback.split("?")[0] == redirect_uri
    returned = parse_qs(urlsplit(callback).query)
    assert returned["state"] == [state]
    assert returned["iss"] == [world.portal.url]

    token = requests.post(metadata["token_endpoint"], auth=(client.client_id, client.client_secret), timeout=10,
                          data={"grant_type": "authorization_code", "code": returned["code"][0],
                                "redirect_uri": redirect_uri, "code_verifier": verifier})
    assert token.status_code == 200, token.text
    tokens = token.json()
    keys = KeySet.import_key_set(requests.get(metadata["jwks_uri"], timeout=10).json())
    id_token = jwt.decode(tokens["id_token"], keys, algorithms=["ES256"])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": world.portal.url}, aud={"essential": True, "value": client.client_id},
        nonce={"essential": True, "value": nonce}, sub={"essential": True},
    ).validate(id_token.claims)

    answer = requests.get(world.portal.url + "/signing/v1/results", timeout=30,
                          headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    root = requests.get(world.portal.url + "/pki/ca/portal-root.crt", timeout=10)
    assert root.status_code == 200
    results = answer.json()
    return Signed(client=client, metadata=metadata, tokens=tokens | {"id_token_claims": id_token.claims},
                  results=results, root_der=root.content, details=details,
                  secrets=[returned["code"][0], verifier, tokens["access_token"], tokens["id_token"],
                           results["assertion"], client.client_secret])


def _document(signed: Signed, label: str) -> dict[str, Any]:
    [found] = [entry for entry in signed.results["documents"] if entry["label"] == label]
    return found


def test_token_response_and_results_repeat_the_details_without_the_pdf(signed):
    granted = [{
        "type": "document_signature",
        "hashAlgorithmOID": SHA256_OID,
        "documentDigests": [{"label": entry["label"], "hash": entry["hash"]}
                            for entry in signed.details[0]["documentDigests"]],
    }]
    assert signed.tokens["authorization_details"] == granted
    assert signed.results["authorization_details"] == granted
    assert [(entry["label"], entry["signature_format"]) for entry in signed.results["documents"]] == [
        ("Terms of sale", "pades"), ("Lease contract", "cades"),
    ]


def test_the_portal_root_served_over_http_is_the_instances(world, signed):
    on_disk = x509.load_pem_x509_certificate(
        (world.portal.directory / "instance" / "pki" / "portal-root.crt.pem").read_bytes(),
    )
    assert on_disk.public_bytes(serialization.Encoding.DER) == signed.root_der


def test_pyhanko_finds_the_signed_pdf_intact_trusted_and_timestamped(world, signed):
    signed_pdf = base64.b64decode(_document(signed, "Terms of sale")["signed_pdf"])
    reader = PdfFileReader(BytesIO(signed_pdf))
    [embedded] = reader.embedded_signatures
    dss = DocumentSecurityStore.read_dss(reader)

    def context():  # from the PDF's own DSS and the root alone: nothing fetched, revocation required
        return dss.as_validation_context({
            "trust_roots": [asn1_x509.Certificate.load(signed.root_der)], "allow_fetching": False,
            "revocation_mode": "hard-fail", "moment": datetime.now(UTC),
        })

    status = asyncio.run(async_validate_pdf_signature(embedded, signer_validation_context=context(),
                                                      ts_validation_context=context()))
    assert status.intact, status.pretty_print_details()
    assert status.valid, status.pretty_print_details()
    assert status.trusted, status.pretty_print_details()
    assert status.coverage.name == "ENTIRE_REVISION"
    assert status.timestamp_validity is not None
    assert status.timestamp_validity.intact
    assert status.timestamp_validity.trusted
    assert status.bottom_line, status.pretty_print_details()
    signer = x509.load_der_x509_certificate(status.signing_cert.dump())
    assert signer == world.phone.enrollment.sign_certificate
    # The signed revision is the PDF the RP sent, and nothing but the signature was added to it.
    assert signed_pdf.startswith(PDF)


def test_openssl_verifies_the_detached_cades_signature(signed, tmp_path):
    openssl = shutil.which("openssl")
    assert openssl is not None
    (tmp_path / "signature.der").write_bytes(base64.b64decode(_document(signed, "Lease contract")["signature"]))
    (tmp_path / "contract.txt").write_bytes(CONTRACT)
    (tmp_path / "root.pem").write_bytes(
        x509.load_der_x509_certificate(signed.root_der).public_bytes(serialization.Encoding.PEM),
    )
    verify = [openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "signature.der"),
              "-CAfile", str(tmp_path / "root.pem"), "-out", "/dev/null", "-purpose", "any"]
    done = subprocess.run([*verify, "-content", str(tmp_path / "contract.txt")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "Verification successful" in done.stderr
    (tmp_path / "other.txt").write_bytes(CONTRACT + b"!")
    tampered = subprocess.run([*verify, "-content", str(tmp_path / "other.txt")], capture_output=True, text=True,
                              check=False)
    assert tampered.returncode == 4, tampered.stderr  # openssl cms: "an error occurred verifying the signature"
    assert "Verification failure" in tampered.stderr


def test_assertion_verifies_with_joserfc_against_the_published_jwks(world, signed):
    keys = KeySet.import_key_set(requests.get(signed.metadata["jwks_uri"], timeout=10).json())
    token = jwt.decode(signed.results["assertion"], keys, algorithms=["ES256"])
    assert token.header["typ"] == "signed-document+jwt"
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": world.portal.url},
        aud={"essential": True, "value": signed.client.client_id},
        sub={"essential": True, "value": signed.tokens["id_token_claims"]["sub"]},
        iat={"essential": True}, jti={"essential": True},
    ).validate(token.claims)
    assert [(entry["label"], entry["digest_alg"], entry["digest"], entry["signature_format"])
            for entry in token.claims["documents"]] == [
        ("Terms of sale", "sha256", _b64url(hashlib.sha256(PDF).digest()), "pades"),
        ("Lease contract", "sha256", _b64url(hashlib.sha256(CONTRACT).digest()), "cades"),
    ]
    leaf, *_chain = token.claims["signer"]["x5c"]
    assert x509.load_der_x509_certificate(base64.b64decode(leaf)) == world.phone.enrollment.sign_certificate
    assert base64.b64decode(token.claims["signer"]["x5c"][-1]) == signed.root_der
    assert token.claims["signer"]["status"]["state"] == "good"
    assert "verified_claims" not in token.claims  # the RP asked for no attribute


def _verify(world: World, **parts: bytes | str) -> dict[str, Any]:
    files = {name: (name, value) for name, value in parts.items() if isinstance(value, bytes)}
    data = {name: value for name, value in parts.items() if isinstance(value, str)}
    answer = requests.post(world.portal.url + "/signing/verify", files=files, data=data, timeout=30)
    assert answer.status_code == 200, answer.text
    verdict: dict[str, Any] = answer.json()
    return verdict


def test_signing_verify_says_valid_for_each_result(world, signed):
    signed_pdf = base64.b64decode(_document(signed, "Terms of sale")["signed_pdf"])
    signature = base64.b64decode(_document(signed, "Lease contract")["signature"])
    serial = format(world.phone.enrollment.sign_certificate.serial_number, "X")
    pdf_verdict = _verify(world, pdf=signed_pdf)
    assert pdf_verdict["valid"] is True, pdf_verdict
    assert pdf_verdict["signer"]["serial_number"] == serial
    cades_verdict = _verify(world, signature=signature, document=CONTRACT)
    assert cades_verdict["valid"] is True, cades_verdict
    assert cades_verdict["document_digest"] == {"alg": "sha256", "value": hashlib.sha256(CONTRACT).hexdigest()}
    assert _verify(world, signature=signature, digest=hashlib.sha256(CONTRACT).hexdigest())["valid"] is True
    for document in (PDF, CONTRACT):
        verdict = _verify(world, assertion=signed.results["assertion"], document=document)
        assert verdict["valid"] is True, verdict


def _changed_after_signing(signed_pdf: bytes) -> bytes:
    """The signed PDF with one byte of its first (signed) revision changed: the page's text."""
    at = signed_pdf.index(b"every clause")
    return signed_pdf[:at] + b"EVERY" + signed_pdf[at + 5:]


def test_signing_verify_reports_a_signed_pdf_changed_after_signing(world, signed):
    signed_pdf = base64.b64decode(_document(signed, "Terms of sale")["signed_pdf"])
    verdict = _verify(world, pdf=_changed_after_signing(signed_pdf))
    assert (verdict["valid"], verdict["reason"]) == (False, "document_modified")


def test_signing_verify_reports_the_signature_presented_with_the_other_document(world, signed):
    signature = base64.b64decode(_document(signed, "Lease contract")["signature"])
    verdict = _verify(world, signature=signature, document=PDF)
    assert (verdict["valid"], verdict["reason"]) == (False, "document_modified")


def test_idp_verify_judges_the_results_offline(world, signed, tmp_path):
    signed_pdf = base64.b64decode(_document(signed, "Terms of sale")["signed_pdf"])
    (tmp_path / "signed.pdf").write_bytes(signed_pdf)
    (tmp_path / "changed.pdf").write_bytes(_changed_after_signing(signed_pdf))
    (tmp_path / "assertion.jwt").write_text(signed.results["assertion"])
    (tmp_path / "jwks.json").write_text(requests.get(signed.metadata["jwks_uri"], timeout=10).text)
    (tmp_path / "root.pem").write_bytes(
        x509.load_der_x509_certificate(signed.root_der).public_bytes(serialization.Encoding.PEM),
    )
    (tmp_path / "contract.txt").write_bytes(CONTRACT)
    offline = ["--root", str(tmp_path / "root.pem")]
    assert _idp_verify(world, "--pdf", str(tmp_path / "signed.pdf"), *offline) == (0, True, None)
    assert _idp_verify(world, "--assertion", str(tmp_path / "assertion.jwt"), "--jwks", str(tmp_path / "jwks.json"),
                       "--document", str(tmp_path / "contract.txt")) == (0, True, None)
    assert _idp_verify(world, "--pdf", str(tmp_path / "changed.pdf"), *offline) == (1, False, "document_modified")


def _idp_verify(world: World, *args: str) -> tuple[int, bool, str | None]:
    """``idp verify ARGS --json`` as an operator runs it: its exit code, and the verdict's valid and reason."""
    done = subprocess.run([str(BIN / "idp"), "verify", *args, "--json"], env=world.portal.env, capture_output=True,
                          text=True, timeout=60, check=False)
    verdict = json.loads(done.stdout)
    return done.returncode, verdict["valid"], verdict.get("reason")


def test_another_client_cannot_push_a_signing_request_in_the_rps_name(world, signed):
    other = world.portal.add_client("Other Shop", [REDIRECT_URI], scopes=SIGNING_SCOPES)
    pushed = requests.post(signed.metadata["pushed_authorization_request_endpoint"], timeout=10,
                           auth=(other.client_id, other.client_secret), data={
        "response_type": "code", "client_id": signed.client.client_id,
        "redirect_uri": signed.client.redirect_uris[0], "scope": " ".join(SIGNING_SCOPES),
        "code_challenge": create_s256_code_challenge(secrets.token_urlsafe(48)), "code_challenge_method": "S256",
        "authorization_details": json.dumps(signed.details),
    })
    assert pushed.status_code == 400
    assert pushed.json()["error"] == "invalid_request"


def test_the_portals_log_holds_no_code_token_or_assertion_of_the_ceremony(world, signed):
    log = world.server.log.read_text(encoding="utf-8", errors="replace")
    assert "signing.completed" in log  # the ceremony's own events are there to be scanned
    leaked = [secret[:12] + "…" for secret in signed.secrets if secret in log]
    assert not leaked, f"the portal's log holds {leaked}"


def _attribute(page: str, name: str) -> str:
    start = page.index(f'{name}="') + len(name) + 2
    return page[start:page.index('"', start)]

