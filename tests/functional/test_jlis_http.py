"""The simulated J-LIS over HTTP (Flask test client): CA certificates, CRLs, OCSP, and errors."""

import base64
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509 import ocsp

from idp.pki.attributes import BasicAttributes, Sex
from smartphone.card import CardCertificates
from smartphone.jlis_server import create_jlis_app
from smartphone.state import BadPassphrase, State, StateNotFound

PASSPHRASE = b"correct horse battery staple"
START = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
ATTRIBUTES = BasicAttributes(name="山田　太郎", address="東京都千代田区千代田1-1", date_of_birth=date(1990, 4, 1),
                             sex=Sex.MALE)


@dataclass
class Clock:
    current: datetime

    def now(self) -> datetime:
        return self.current


def _world(root: Path, base_url: str) -> State:
    """A J-LIS with one card, 'taro', issued at START."""
    state = State(root, PASSPHRASE)
    state.create_jlis(base_url=base_url, now=START)
    issued = state.load_jlis().issue_card(
        attributes=ATTRIBUTES, prefecture="東京都", city="千代田区", auth_pin="1234", sign_pin="ABC123", now=START,
    )
    state.add_card("taro", issued)
    return state


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> State:
    return _world(tmp_path_factory.mktemp("jlis") / "world", "http://jlis.test")


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> State:
    """Another J-LIS, with keys of its own; only read by the tests."""
    return _world(tmp_path_factory.mktemp("other") / "world", "http://other.test")


@pytest.fixture
def state(template, tmp_path) -> State:
    """A private copy of the template world: each test may revoke and break what it likes."""
    shutil.copytree(template.root, tmp_path / "world")
    return State(tmp_path / "world", PASSPHRASE)


@pytest.fixture
def clock() -> Clock:
    return Clock(START + timedelta(hours=1))


@pytest.fixture
def client(state, clock):
    return create_jlis_app(state.root, clock, passphrase=PASSPHRASE).test_client()


@pytest.fixture
def card(state) -> CardCertificates:
    """The certificates of the template's card, 'taro'."""
    return state.card_certificates("taro")


def _request(certificate: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())  # noqa: S303
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _post(client, body: bytes, content_type: str = "application/ocsp-request"):
    return client.post("/ocsp", data=body, headers={"Content-Type": content_type})


def _ocsp(response) -> ocsp.OCSPResponse:
    assert response.status_code == 200
    assert response.mimetype == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.data)


def _problem(response, status: int) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    return response.get_json()


@pytest.mark.parametrize("name", ["jlis-root", "jlis-auth-ca", "jlis-sign-ca"])
def test_ca_certificate_is_served_as_der(client, state, name):
    response = client.get(f"/ca/{name}.crt")
    assert response.status_code == 200
    assert response.mimetype == "application/pkix-cert"
    assert x509.load_der_x509_certificate(response.data) == state.load_jlis().authority(name).certificate


def test_unknown_ca_certificate_is_a_404_problem(client):
    assert _problem(client.get("/ca/smartphone-ca.crt"), 404) == {
        "type": "about:blank", "title": "Not Found", "status": 404,
        "detail": "J-LIS has no authority called 'smartphone-ca'",
    }


@pytest.mark.parametrize("name", ["jlis-root", "jlis-auth-ca", "jlis-sign-ca"])
def test_crl_is_served_signed_by_its_ca(client, state, name, clock):
    response = client.get(f"/crl/{name}.crl")
    assert response.status_code == 200
    assert response.mimetype == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.data)
    assert crl.is_signature_valid(state.load_jlis().authority(name).certificate.public_key())
    assert crl.last_update_utc == clock.now()
    assert crl.next_update_utc == clock.now() + timedelta(days=1)


def test_unknown_crl_is_a_404_problem(client):
    assert _problem(client.get("/crl/nope.crl"), 404)["detail"] == "J-LIS has no authority called 'nope'"


def test_crl_lists_a_card_revoked_after_the_server_started(client, state, card, clock):
    state.load_jlis().revoke_card(card, reason=x509.ReasonFlags.key_compromise, now=START)
    crl = x509.load_der_x509_crl(client.get("/crl/jlis-sign-ca.crl").data)
    entry = crl.get_revoked_certificate_by_serial_number(card.sign.serial_number)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise


def test_crl_numbers_increase(client):
    numbers = [
        x509.load_der_x509_crl(client.get("/crl/jlis-auth-ca.crl").data).extensions.get_extension_for_class(
            x509.CRLNumber,
        ).value.crl_number
        for _ in range(2)
    ]
    assert numbers == [1, 2]


def test_ocsp_post_answers_good_for_a_new_card(client, state, card, clock):
    answer = _ocsp(_post(client, _request(card.auth, state.load_jlis().auth_ca.certificate)))
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert answer.this_update_utc == clock.now()
    assert answer.next_update_utc == clock.now() + timedelta(minutes=15)


def test_ocsp_post_answers_revoked_after_the_card_is_revoked(client, state, card):
    jlis = state.load_jlis()
    jlis.revoke_card(card, reason=x509.ReasonFlags.key_compromise, now=START)
    answer = _ocsp(_post(client, _request(card.sign, jlis.sign_ca.certificate)))
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is x509.ReasonFlags.key_compromise


def test_ocsp_answer_is_signed_by_the_issuing_ca(client, state, card):
    jlis = state.load_jlis()
    answer = _ocsp(_post(client, _request(card.auth, jlis.auth_ca.certificate)))
    jlis.auth_ca.certificate.public_key().verify(
        answer.signature, answer.tbs_response_bytes, padding.PKCS1v15(), answer.signature_hash_algorithm,
    )


def test_ocsp_answer_echoes_the_nonce(client, state, card):
    nonce = b"n" * 16
    answer = _ocsp(_post(client, _request(card.auth, state.load_jlis().auth_ca.certificate, nonce=nonce)))
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


def test_ocsp_get_answers_good(client, state, card):
    encoded = quote(base64.b64encode(_request(card.auth, state.load_jlis().auth_ca.certificate)), safe="")
    assert _ocsp(client.get(f"/ocsp/{encoded}")).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_ocsp_for_a_serial_never_issued_is_unknown(client, state, card):
    asked = ocsp.load_der_ocsp_request(_request(card.auth, state.load_jlis().auth_ca.certificate))
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            issuer_name_hash=asked.issuer_name_hash,
            issuer_key_hash=asked.issuer_key_hash,
            serial_number=card.auth.serial_number + 1,
            algorithm=hashes.SHA1(),  # noqa: S303 - the CertID hash OpenSSL sends
        )
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    assert _ocsp(_post(client, request)).certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def test_ocsp_for_an_issuer_this_jlis_does_not_serve_is_unauthorized(client, other):
    foreign = other.card_certificates("taro")
    request = _request(foreign.auth, other.load_jlis().auth_ca.certificate)
    assert _ocsp(_post(client, request)).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


@pytest.mark.parametrize("body", [b"", b"not der", b"\x30\x03\x02\x01\x01"])
def test_unreadable_ocsp_post_gets_malformed_request(client, body):
    assert _ocsp(_post(client, body)).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("encoded", ["!!!", "%20", "QUJD", "a" * 5000])
def test_unreadable_ocsp_get_gets_malformed_request(client, encoded):
    assert _ocsp(client.get(f"/ocsp/{encoded}")).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("content_type", ["application/octet-stream", "text/plain", ""])
def test_ocsp_post_with_another_content_type_is_a_415_problem(client, state, card, content_type):
    request = _request(card.auth, state.load_jlis().auth_ca.certificate)
    problem = _problem(_post(client, request, content_type), 415)
    assert problem["detail"] == "an OCSP request is sent as application/ocsp-request"


def test_ocsp_post_that_is_too_large_is_a_413_problem(client):
    assert _problem(_post(client, b"\x00" * (16 * 1024 + 1)), 413)["title"] == "Request Entity Too Large"


def test_get_on_the_ocsp_post_endpoint_is_a_405_problem(client):
    assert _problem(client.get("/ocsp"), 405)["title"] == "Method Not Allowed"


def test_post_to_a_crl_is_a_405_problem(client):
    assert _problem(client.post("/crl/jlis-root.crl"), 405)["status"] == 405


def test_unknown_path_is_a_404_problem(client):
    assert _problem(client.get("/"), 404)["title"] == "Not Found"


def test_broken_registry_is_a_500_problem_without_detail(client, state):
    (state.jlis_dir / "registry" / "jlis-auth-ca.json").write_text("{")
    response = client.get("/crl/jlis-auth-ca.crl")
    assert _problem(response, 500) == {"type": "about:blank", "title": "Internal Server Error", "status": 500}
    assert b"Traceback" not in response.data


def test_server_refuses_to_start_with_the_wrong_passphrase(state):
    with pytest.raises(BadPassphrase):
        create_jlis_app(state.root, passphrase=b"wrong")


def test_server_refuses_to_start_without_a_jlis(tmp_path):
    with pytest.raises(StateNotFound):
        create_jlis_app(tmp_path, passphrase=PASSPHRASE)


def test_server_takes_the_passphrase_from_the_environment(state, monkeypatch):
    monkeypatch.setenv("SMARTPHONE_PASSPHRASE", PASSPHRASE.decode())
    assert create_jlis_app(state.root).test_client().get("/ca/jlis-root.crt").status_code == 200
