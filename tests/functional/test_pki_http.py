"""The /pki endpoints over HTTP: CA certificates, CRLs, OCSP (RFC 6960 A.1), and every error path.

Each test builds the portal with ``create_app`` on a fresh instance, once on SQLite and once on
PostgreSQL (``database_url``), and drives it with Flask's test client. No mocks.
"""

from __future__ import annotations

import base64
import io
import json
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from flask import Blueprint, abort
from flask import Flask as FlaskApp
from sqlalchemy import func, select

from idp.app import create_app, services
from idp.clock import FixedClock
from idp.pki.http import MAX_OCSP_REQUEST_BYTES
from idp.pki.profiles import (
    CARD_AUTH,
    JLIS_ROOT,
    SMARTPHONE_AUTH,
    Issuer,
    KeyAlgorithm,
    build_certificate,
    card_auth_subject,
    generate_key,
    jlis_name,
)
from idp.pki.records import CrlCounter, IssuedCertificate
from idp.pki.service import init_pki
from idp.settings import PkiSettings, Settings
from idp.store.database import make_engine, upgrade
from idp.web.problems import UnsupportedMediaType, register_problem_handler, serve_problems

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from flask import Flask
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from idp.pki.service import PortalPki

NOW = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
CRL_LIFETIME = timedelta(hours=24)
OCSP_LIFETIME = timedelta(minutes=15)
PROBLEMS = "https://id.myna.example/problems/"
SHA1 = hashes.SHA1()  # noqa: S303 - the default CertID hash of RFC 6960 §4.1.1 (openssl sends it)


@pytest.fixture(scope="module")
def card() -> tuple[Issuer, x509.Certificate]:
    """A J-LIS-style root and a card user-auth certificate it issued: the source of phone certificates."""
    root_key = generate_key(KeyAlgorithm.RSA_2048)
    root_certificate = build_certificate(
        profile=JLIS_ROOT, subject=jlis_name("JPKI for user authentication"), public_key=root_key.public_key(),
        issuer=None, signing_key=root_key, not_before=NOW - timedelta(days=365), not_after=NOW + timedelta(days=3650),
    )
    root = Issuer(root_certificate, root_key)
    card_key = generate_key(KeyAlgorithm.RSA_2048)
    certificate = build_certificate(
        profile=CARD_AUTH, subject=card_auth_subject("A0001"), public_key=card_key.public_key(), issuer=root,
        not_before=NOW - timedelta(days=30), not_after=NOW + timedelta(days=1500),
        crl_url="http://jlis.example/crl", ocsp_url="http://jlis.example/ocsp",
    )
    return root, certificate


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def app(tmp_path: Path, database_url: str, clock: FixedClock) -> Iterator[Flask]:
    """The portal on a new instance: migrated database, portal CAs made by ``init_pki``."""
    settings = Settings(
        instance=tmp_path, database_url=database_url,
        pki=PkiSettings(crl_lifetime=CRL_LIFETIME, ocsp_lifetime=OCSP_LIFETIME),
    )
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    init_pki(tmp_path, issuer_url=settings.issuer, now=NOW - timedelta(days=1))
    app = create_app(settings, clock=clock)
    app.config["TESTING"] = True
    yield app
    services(app).engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def portal(app: Flask) -> PortalPki:
    return services(app).pki


@pytest.fixture
def phone_certificate(portal: PortalPki, card: tuple[Issuer, x509.Certificate]) -> x509.Certificate:
    key = generate_key(KeyAlgorithm.EC_P256)
    return portal.issue_smartphone_certificate(
        profile=SMARTPHONE_AUTH,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "phone")]),
        public_key=key.public_key(),
        card_certificates=[card[1]],
    )


def ocsp_request(certificate: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, SHA1)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def post_ocsp(client: FlaskClient, body: bytes) -> TestResponse:
    return client.post("/pki/ocsp", data=body, headers={"Content-Type": "application/ocsp-request"})


def answer(response: TestResponse) -> ocsp.OCSPResponse:
    assert response.status_code == 200
    assert response.mimetype == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.data)


def problem(response: TestResponse, status: int, kind: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = json.loads(response.data)
    assert body["type"] == PROBLEMS + kind
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    return body


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


# CA certificates

@pytest.mark.parametrize("name", ["portal-root", "smartphone-ca"])
def test_ca_certificate_is_served_as_der(client: FlaskClient, portal: PortalPki, name: str) -> None:
    response = client.get(f"/pki/ca/{name}.crt")
    assert response.status_code == 200
    assert response.mimetype == "application/pkix-cert"
    assert response.data == portal.ca_certificate_der(name)
    assert x509.load_der_x509_certificate(response.data).subject.rfc4514_string().startswith("CN=Myna Gateway")


def test_smartphone_ca_certificate_chains_to_the_served_root(client: FlaskClient) -> None:
    root = x509.load_der_x509_certificate(client.get("/pki/ca/portal-root.crt").data)
    ca = x509.load_der_x509_certificate(client.get("/pki/ca/smartphone-ca.crt").data)
    ca.verify_directly_issued_by(root)


def test_unknown_ca_certificate_is_a_404_problem(client: FlaskClient) -> None:
    body = problem(client.get("/pki/ca/jlis-root.crt"), 404, "unknown-ca")
    assert "portal-root" in str(body["detail"])


# CRLs

def test_crl_is_served_with_next_update_and_a_cache_lifetime_up_to_it(client: FlaskClient, portal: PortalPki) -> None:
    response = client.get("/pki/crl/smartphone-ca.crl")
    assert response.status_code == 200
    assert response.mimetype == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.data)
    assert crl.next_update_utc == NOW + CRL_LIFETIME
    assert crl.is_signature_valid(portal.authority.certificate.public_key())  # type: ignore[arg-type]
    assert response.headers["Cache-Control"] == f"public, max-age={int(CRL_LIFETIME.total_seconds())}"


def test_crl_cache_lifetime_shrinks_as_next_update_nears(client: FlaskClient, clock: FixedClock) -> None:
    client.get("/pki/crl/smartphone-ca.crl")
    clock.advance(timedelta(hours=10))
    response = client.get("/pki/crl/smartphone-ca.crl")
    assert response.headers["Cache-Control"] == f"public, max-age={int(timedelta(hours=14).total_seconds())}"


def test_root_crl_is_served(client: FlaskClient, portal: PortalPki) -> None:
    response = client.get("/pki/crl/portal-root.crl")
    assert response.status_code == 200
    crl = x509.load_der_x509_crl(response.data)
    assert crl.issuer == portal.root.subject
    assert crl.next_update_utc is not None


def test_crl_is_regenerated_after_a_revocation_with_a_higher_number(
    client: FlaskClient, portal: PortalPki, phone_certificate: x509.Certificate,
) -> None:
    before = x509.load_der_x509_crl(client.get("/pki/crl/smartphone-ca.crl").data)
    portal.revoke(phone_certificate.serial_number, x509.ReasonFlags.key_compromise)
    after = x509.load_der_x509_crl(client.get("/pki/crl/smartphone-ca.crl").data)
    assert crl_number(after) > crl_number(before)
    entry = after.get_revoked_certificate_by_serial_number(phone_certificate.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise
    assert before.get_revoked_certificate_by_serial_number(phone_certificate.serial_number) is None


def test_unknown_crl_is_a_404_problem(client: FlaskClient) -> None:
    problem(client.get("/pki/crl/jlis-auth-ca.crl"), 404, "unknown-ca")


# OCSP

def test_ocsp_post_answers_good(client: FlaskClient, portal: PortalPki, phone_certificate: x509.Certificate) -> None:
    response = answer(post_ocsp(client, ocsp_request(phone_certificate, portal.authority.certificate)))
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.next_update_utc == NOW + OCSP_LIFETIME


def test_ocsp_post_answers_revoked_after_revocation(
    client: FlaskClient, portal: PortalPki, phone_certificate: x509.Certificate,
) -> None:
    portal.revoke(phone_certificate.serial_number, x509.ReasonFlags.affiliation_changed)
    response = answer(post_ocsp(client, ocsp_request(phone_certificate, portal.authority.certificate)))
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is x509.ReasonFlags.affiliation_changed
    assert response.revocation_time_utc == NOW


def test_ocsp_answers_unknown_for_a_serial_never_issued(client: FlaskClient, portal: PortalPki) -> None:
    ca = portal.authority.certificate
    request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        issuer_name_hash=_digest(ca.subject.public_bytes()), issuer_key_hash=portal.authority.key_id,
        serial_number=31337, algorithm=SHA1,
    ).build().public_bytes(serialization.Encoding.DER)
    assert answer(post_ocsp(client, request)).certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def test_ocsp_answers_for_the_smartphone_ca_itself(client: FlaskClient, portal: PortalPki) -> None:
    response = answer(post_ocsp(client, ocsp_request(portal.authority.certificate, portal.root)))
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD


def test_ocsp_echoes_the_nonce(client: FlaskClient, portal: PortalPki, phone_certificate: x509.Certificate) -> None:
    nonce = os.urandom(16)
    response = answer(post_ocsp(client, ocsp_request(phone_certificate, portal.authority.certificate, nonce=nonce)))
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


def test_ocsp_get_answers_good(client: FlaskClient, portal: PortalPki, phone_certificate: x509.Certificate) -> None:
    encoded = quote(base64.b64encode(ocsp_request(phone_certificate, portal.authority.certificate)).decode(), safe="")
    response = client.get(f"/pki/ocsp/{encoded}")
    assert answer(response).certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.headers["Cache-Control"] == f"public, max-age={int(OCSP_LIFETIME.total_seconds())}"


def test_ocsp_get_with_slashes_in_the_base64_is_not_merged(
    client: FlaskClient, portal: PortalPki, phone_certificate: x509.Certificate,
) -> None:
    # A nonce of 0xff bytes puts "//" in the base64; sent unescaped, as some clients do.
    request = ocsp_request(phone_certificate, portal.authority.certificate, nonce=b"\xff" * 24)
    encoded = base64.b64encode(request).decode()
    assert "//" in encoded
    response = client.get(f"/pki/ocsp/{encoded}")
    assert answer(response).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_ocsp_issuer_not_served_is_unauthorized(client: FlaskClient, card: tuple[Issuer, x509.Certificate]) -> None:
    root, card_certificate = card
    response = answer(post_ocsp(client, ocsp_request(card_certificate, root.certificate)))
    assert response.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


@pytest.mark.parametrize("body", [b"", b"garbage", b"\x30\x00"], ids=["empty", "garbage", "empty-sequence"])
def test_malformed_ocsp_post_is_http_200_malformed_request(client: FlaskClient, body: bytes) -> None:
    assert answer(post_ocsp(client, body)).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("encoded", ["not-base64!", "TWFu", "%ZZ"], ids=["not-base64", "not-a-request", "bad-escape"])
def test_malformed_ocsp_get_is_http_200_malformed_request(client: FlaskClient, encoded: str) -> None:
    assert answer(client.get(f"/pki/ocsp/{encoded}")).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


# Errors are problems, never HTML.

@pytest.mark.parametrize(
    "content_type", ["application/octet-stream", "application/json", None], ids=["octet-stream", "json", "none"],
)
def test_ocsp_post_with_the_wrong_content_type_is_a_415_problem(
    client: FlaskClient, portal: PortalPki, phone_certificate: x509.Certificate, content_type: str | None,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(
        "/pki/ocsp", data=ocsp_request(phone_certificate, portal.authority.certificate), headers=headers,
    )
    problem(response, 415, "unsupported-media-type")


def test_ocsp_post_larger_than_an_ocsp_request_is_a_413_problem(client: FlaskClient) -> None:
    problem(post_ocsp(client, b"\x30" * (MAX_OCSP_REQUEST_BYTES + 1)), 413, "request-too-large")


def test_ocsp_post_larger_than_the_app_accepts_is_a_413_problem(client: FlaskClient) -> None:
    problem(post_ocsp(client, b"\x30" * ((1 << 20) + 1)), 413, "request-too-large")


def test_ocsp_post_streamed_without_length_is_cut_off_with_a_413_problem(client: FlaskClient) -> None:
    response = client.post(
        "/pki/ocsp", input_stream=io.BytesIO(b"\x30" * (MAX_OCSP_REQUEST_BYTES + 1)),
        headers={"Content-Type": "application/ocsp-request", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # what a server sets for a chunked body
    )
    problem(response, 413, "request-too-large")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/pki/ocsp"), ("PUT", "/pki/ocsp"), ("DELETE", "/pki/ca/portal-root.crt"),
        ("POST", "/pki/crl/smartphone-ca.crl"),
    ],
    ids=["get-ocsp-without-request", "put-ocsp", "delete-certificate", "post-crl"],
)
def test_wrong_method_is_a_405_problem_naming_the_allowed_ones(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method)
    problem(response, 405, "method-not-allowed")
    assert response.headers["Allow"]


@pytest.mark.parametrize("path", ["/pki", "/pki/", "/pki/nothing", "/pki/ca/", "/pki/crl/smartphone-ca.pem"])
def test_unknown_route_under_pki_is_a_404_problem(client: FlaskClient, path: str) -> None:
    problem(client.get(path), 404, "not-found")


def test_unknown_route_elsewhere_is_left_to_flask(client: FlaskClient) -> None:
    response = client.get("/pkinot/here")
    assert response.status_code == 404
    assert response.mimetype != "application/problem+json"


def test_rejected_requests_write_nothing(client: FlaskClient, app: Flask) -> None:
    client.post("/pki/ocsp", data=b"x", headers={"Content-Type": "text/plain"})
    post_ocsp(client, b"\x30" * (MAX_OCSP_REQUEST_BYTES + 1))
    client.get("/pki/ca/unknown.crt")
    client.delete("/pki/ocsp")
    with services(app).sessions() as session:
        assert session.scalar(select(func.count()).select_from(IssuedCertificate)) == 0
        assert session.scalar(select(func.count()).select_from(CrlCounter)) == 0


@pytest.fixture
def broken_app(tmp_path: Path, sqlite_database: str, clock: FixedClock) -> Iterator[Flask]:
    """The portal on a database that was never migrated: every query fails."""
    settings = Settings(instance=tmp_path, database_url=sqlite_database)
    init_pki(tmp_path, issuer_url=settings.issuer, now=NOW)
    app = create_app(settings, clock=clock)
    yield app
    services(app).engine.dispose()


def test_database_failure_is_a_500_problem_without_detail(broken_app: Flask) -> None:
    response = broken_app.test_client().get("/pki/crl/smartphone-ca.crl")
    body = problem(response, 500, "server-error")
    assert "detail" not in body
    assert b"sqlite" not in response.data.lower()


def test_database_failure_in_ocsp_is_an_ocsp_internal_error(broken_app: Flask) -> None:
    portal = services(broken_app).pki
    request = ocsp_request(portal.authority.certificate, portal.root)
    response = answer(post_ocsp(broken_app.test_client(), request))
    assert response.response_status is ocsp.OCSPResponseStatus.INTERNAL_ERROR


def _digest(data: bytes) -> bytes:
    digest = hashes.Hash(SHA1)
    digest.update(data)
    return digest.finalize()


# The problem renderer the device API will reuse.

@pytest.fixture
def api() -> FlaskClient:
    """A bare app with one problem-speaking blueprint under /api and a second prefix /device."""
    app = FlaskApp("problems")
    blueprint = Blueprint("api", __name__)
    register_problem_handler(blueprint)

    @blueprint.get("/teapot")
    def teapot() -> str:
        abort(418)

    @blueprint.get("/refused")
    def refused() -> str:
        raise UnsupportedMediaType("send JSON", headers={"Accept-Post": "application/json"})

    app.register_blueprint(blueprint, url_prefix="/api")
    serve_problems(app, "/api")
    serve_problems(app, "/device/")
    return app.test_client()


def test_http_error_without_a_type_of_its_own_is_about_blank(api: FlaskClient) -> None:
    response = api.get("/api/teapot")
    assert response.status_code == 418
    assert response.mimetype == "application/problem+json"
    assert json.loads(response.data) == {"type": "about:blank", "title": "I'm a teapot", "status": 418}


def test_problem_keeps_its_detail_and_headers(api: FlaskClient) -> None:
    response = api.get("/api/refused")
    body = problem(response, 415, "unsupported-media-type")
    assert body["detail"] == "send JSON"
    assert response.headers["Accept-Post"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"


def test_every_registered_prefix_answers_problems(api: FlaskClient) -> None:
    problem(api.get("/device/unknown"), 404, "not-found")
    problem(api.get("/device"), 404, "not-found")
