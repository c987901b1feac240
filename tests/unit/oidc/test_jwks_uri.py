"""private_key_jwt clients registered by jwks_uri: fetching, caching, rotation, and every way a fetch fails.

A real HTTPS server on loopback (werkzeug in a thread, a certificate from a CA made for the test)
serves the client's JWK Set; each test changes what it serves. The first half drives
``ClientKeySets`` directly; the second drives the portal's PAR endpoint, where a client
authenticates with its assertion, through ``create_app``.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc import jwt
from joserfc.jwk import ECKey
from werkzeug.serving import make_server

from idp.app import create_app, services
from idp.clock import FixedClock
from idp.oidc.client_jwks import MAX_JWKS_BYTES, ClientKeySets, HttpJwksFetcher, KeysUnavailable, Reason
from idp.pki.service import init_pki
from idp.settings import OidcSettings, Settings
from idp.store.database import make_engine, upgrade

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from flask import Flask

ISSUER = "http://127.0.0.1:8000"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TTL = timedelta(minutes=5)
INTERVAL = timedelta(seconds=60)


# --- a JWK Set served over HTTPS -----------------------------------------------------------------


@dataclass
class JwksServer:
    """What the client's server answers, and how often it was asked."""

    url: str
    ca_file: Path
    body: bytes = b""
    status: int = 200
    delay: float = 0.0
    location: str | None = None
    hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def serve_keys(self, *keys: ECKey) -> None:
        self.body = json.dumps({"keys": [key.as_dict(private=False) for key in keys]}).encode()

    def __call__(self, _environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            self.hits += 1
        time.sleep(self.delay)
        headers = [("Content-Type", "application/jwk-set+json")]
        if self.location is not None:
            headers.append(("Location", self.location))
        start_response(f"{self.status} X", headers)
        return [self.body]


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 that it issued: (CA file, cert file, key file)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test RP CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    ))
    return files


@pytest.fixture
def jwks_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JwksServer]:
    """The client's key server. The portal trusts its CA the way an operator adds a CA for
    outgoing requests: requests reads ``REQUESTS_CA_BUNDLE``."""
    ca_file, cert_file, key_file = _tls_files(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    served = JwksServer(url="", ca_file=ca_file)
    server = make_server("127.0.0.1", 0, served, threaded=True, ssl_context=context)
    served.url = f"https://127.0.0.1:{server.server_port}/jwks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


def new_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid})


# --- ClientKeySets against the server ------------------------------------------------------------


@pytest.fixture
def clock() -> FixedClock:
    """Now, standing still: assertions are checked against the wall clock, the cache against this."""
    return FixedClock(datetime.now(UTC).replace(microsecond=0))


def key_sets(clock: FixedClock, *, timeout: float = 3.0) -> ClientKeySets:
    fetcher = HttpJwksFetcher(timeout=timedelta(seconds=timeout))
    return ClientKeySets(fetcher, ttl=TTL, refetch_interval=INTERVAL, clock=clock)


def kids(sets: ClientKeySets, server: JwksServer, kid: str | None = None) -> set[str | None]:
    found = sets.key_set(client_id="client-1", jwks_uri=server.url, kid=kid)
    return {key.kid for key in found.keys}


def unavailable(sets: ClientKeySets, server: JwksServer, kid: str | None = None) -> Reason:
    with pytest.raises(KeysUnavailable) as raised:
        sets.key_set(client_id="client-1", jwks_uri=server.url, kid=kid)
    return raised.value.reason


def test_keys_are_fetched_once_and_reused_for_the_ttl(jwks_server: JwksServer, clock: FixedClock) -> None:
    jwks_server.serve_keys(new_key("k1"))
    sets = key_sets(clock)
    assert kids(sets, jwks_server, "k1") == {"k1"}
    clock.advance(TTL - timedelta(seconds=1))
    assert kids(sets, jwks_server, "k1") == {"k1"}
    assert jwks_server.hits == 1
    clock.advance(timedelta(seconds=1))
    assert kids(sets, jwks_server, "k1") == {"k1"}
    assert jwks_server.hits == 2


def test_an_unknown_kid_fetches_the_rotated_set(jwks_server: JwksServer, clock: FixedClock) -> None:
    jwks_server.serve_keys(new_key("k1"))
    sets = key_sets(clock)
    assert kids(sets, jwks_server, "k1") == {"k1"}
    jwks_server.serve_keys(new_key("k2"))  # the client rotates
    clock.advance(INTERVAL)
    assert kids(sets, jwks_server, "k2") == {"k2"}
    assert jwks_server.hits == 2


def test_unknown_kids_do_not_refetch_within_the_interval(jwks_server: JwksServer, clock: FixedClock) -> None:
    jwks_server.serve_keys(new_key("k1"))
    sets = key_sets(clock)
    assert kids(sets, jwks_server) == {"k1"}
    for _ in range(20):
        clock.advance(timedelta(seconds=2))
        assert kids(sets, jwks_server, secrets.token_hex(4)) == {"k1"}
    assert jwks_server.hits == 1
    clock.advance(INTERVAL)
    assert kids(sets, jwks_server, "made-up") == {"k1"}
    assert jwks_server.hits == 2


def test_concurrent_first_requests_fetch_once(jwks_server: JwksServer, clock: FixedClock) -> None:
    jwks_server.serve_keys(new_key("k1"))
    jwks_server.delay = 0.2
    sets = key_sets(clock)
    results: list[set[str | None]] = []
    threads = [threading.Thread(target=lambda: results.append(kids(sets, jwks_server, "k1"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [{"k1"}] * 8
    assert jwks_server.hits == 1


def test_a_set_with_other_keys_keeps_only_its_signature_keys(jwks_server: JwksServer, clock: FixedClock) -> None:
    encryption = {**new_key("enc").as_dict(private=False), "use": "enc"}
    unknown_type = {"kty": "PQC", "kid": "future"}
    x25519 = {"kty": "OKP", "crv": "X25519", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo", "kid": "ecdh"}
    jwks_server.body = json.dumps(
        {"keys": [encryption, unknown_type, x25519, new_key("sig").as_dict(private=False)]},
    ).encode()
    assert kids(key_sets(clock), jwks_server) == {"sig"}


@pytest.mark.parametrize(("status", "location"), [(500, None), (404, None), (302, "https://127.0.0.1:1/jwks")],
                         ids=["server_error", "not_found", "redirect"])
def test_an_error_answer_is_unreachable_and_not_retried_within_the_interval(
    jwks_server: JwksServer, clock: FixedClock, status: int, location: str | None,
) -> None:
    jwks_server.serve_keys(new_key("k1"))
    jwks_server.status, jwks_server.location = status, location
    sets = key_sets(clock)
    assert unavailable(sets, jwks_server, "k1") is Reason.UNREACHABLE
    clock.advance(INTERVAL - timedelta(seconds=1))
    assert unavailable(sets, jwks_server, "k1") is Reason.THROTTLED
    assert jwks_server.hits == 1
    jwks_server.status, jwks_server.location = 200, None
    clock.advance(timedelta(seconds=1))
    assert kids(sets, jwks_server, "k1") == {"k1"}


def test_a_closed_port_is_unreachable(clock: FixedClock, tmp_path: Path) -> None:
    closed = JwksServer(url="https://127.0.0.1:1/jwks", ca_file=tmp_path / "none.pem")
    assert unavailable(key_sets(clock, timeout=1), closed) is Reason.UNREACHABLE


def test_a_server_slower_than_the_timeout_is_unreachable(jwks_server: JwksServer, clock: FixedClock) -> None:
    jwks_server.serve_keys(new_key("k1"))
    jwks_server.delay = 1.5
    started = time.monotonic()
    assert unavailable(key_sets(clock, timeout=0.3), jwks_server) is Reason.UNREACHABLE
    assert time.monotonic() - started < 1.4


def test_a_certificate_the_portal_does_not_trust_is_unreachable(
    jwks_server: JwksServer, clock: FixedClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    jwks_server.serve_keys(new_key("k1"))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert unavailable(key_sets(clock), jwks_server) is Reason.UNREACHABLE
    assert jwks_server.hits == 0  # refused at the TLS handshake


def test_an_oversized_set_is_refused(jwks_server: JwksServer, clock: FixedClock) -> None:
    padding = "x" * MAX_JWKS_BYTES
    jwks_server.body = json.dumps({"keys": [new_key("k1").as_dict(private=False)], "padding": padding}).encode()
    assert unavailable(key_sets(clock), jwks_server) is Reason.TOO_LARGE


@pytest.mark.parametrize("body", [b"<html>not json</html>", b'{"keys": [', b"[" * 10_000 + b"]" * 10_000],
                         ids=["html", "truncated", "nested_past_parser_depth"])
def test_a_body_that_is_not_json_is_refused(jwks_server: JwksServer, clock: FixedClock, body: bytes) -> None:
    jwks_server.body = body
    assert unavailable(key_sets(clock), jwks_server) is Reason.NOT_JSON


@pytest.mark.parametrize("document", [
    pytest.param([], id="array"),
    pytest.param({"keys": "none"}, id="keys_not_an_array"),
    pytest.param({"keys": []}, id="no_keys"),
    pytest.param({"keys": [{**new_key("e").as_dict(private=False), "use": "enc"}]}, id="no_signature_key"),
    pytest.param({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, id="shared_secret_published"),
    pytest.param({"keys": [new_key("k1").as_dict(private=True)]}, id="private_key_published"),
    pytest.param({"keys": [new_key("k1").as_dict(private=False), new_key("k1").as_dict(private=False)]},
                 id="two_keys_share_a_kid"),
])
def test_json_that_is_not_a_usable_key_set_is_refused(
    jwks_server: JwksServer, clock: FixedClock, document: object,
) -> None:
    jwks_server.body = json.dumps(document).encode()
    assert unavailable(key_sets(clock), jwks_server) is Reason.NOT_A_KEY_SET


def test_a_stale_set_is_not_used_when_the_refetch_fails(jwks_server: JwksServer, clock: FixedClock) -> None:
    jwks_server.serve_keys(new_key("k1"))
    sets = key_sets(clock)
    assert kids(sets, jwks_server, "k1") == {"k1"}
    jwks_server.status = 503
    clock.advance(TTL)
    assert unavailable(sets, jwks_server, "k1") is Reason.UNREACHABLE


# --- the portal: a jwks_uri client authenticates at PAR ------------------------------------------


@pytest.fixture
def app(tmp_path: Path, clock: FixedClock, jwks_server: JwksServer) -> Iterator[Flask]:
    database_url = f"sqlite:///{tmp_path / 'idp.sqlite3'}"
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    init_pki(tmp_path, issuer_url=ISSUER, now=clock.now() - timedelta(days=1))
    oidc = OidcSettings(jwks_uri_cache_ttl=TTL, jwks_uri_refetch_interval=INTERVAL)
    app = create_app(Settings(instance=tmp_path, database_url=database_url, oidc=oidc), clock=clock)
    app.config["TESTING"] = True
    yield app
    services(app).engine.dispose()


@pytest.fixture
def client_id(app: Flask, clock: FixedClock, jwks_server: JwksServer) -> str:
    registered = services(app).oidc.clients.register(
        name="Key Rotating Shop", redirect_uris=["https://rp.example/callback"], auth_method="private_key_jwt",
        scopes=["openid"], jwks_uri=jwks_server.url, now=clock.now(),
    )
    return registered.client.client_id


def push(app: Flask, client_id: str, key: ECKey, kid: str | None = None) -> tuple[int, Any]:
    """POST /par authenticated by an assertion signed with ``key``; (status, JSON body)."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": ISSUER + "/par", "iat": now, "exp": now + 60,
              "jti": secrets.token_urlsafe(16)}
    header = {"alg": "ES256", "kid": kid if kid is not None else key.kid}
    verifier = generate_token(64)
    response = app.test_client().post("/par", data={
        "response_type": "code", "client_id": client_id, "redirect_uri": "https://rp.example/callback",
        "scope": "openid", "state": "s", "nonce": "n", "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": jwt.encode(header, claims, key, algorithms=["ES256"]),
    })
    return response.status_code, response.get_json()


def test_jwks_uri_client_authenticates_and_survives_key_rotation(
    app: Flask, clock: FixedClock, client_id: str, jwks_server: JwksServer,
) -> None:
    old, rotated = new_key("2026-03"), new_key("2026-04")
    jwks_server.serve_keys(old)
    first = push(app, client_id, old)
    assert first[0] == 201, first
    jwks_server.serve_keys(rotated)
    clock.advance(INTERVAL)
    status, body = push(app, client_id, rotated)
    assert status == 201, body
    assert jwks_server.hits == 2
    # The retired key is gone from the refetched set.
    status, body = push(app, client_id, old)
    assert (status, body["error"]) == (400, "invalid_client")


def test_assertion_signed_with_a_key_the_client_does_not_publish_is_invalid_client(
    app: Flask, clock: FixedClock, client_id: str, jwks_server: JwksServer,
) -> None:
    jwks_server.serve_keys(new_key("k1"))
    status, body = push(app, client_id, new_key("other"), kid="k1")
    assert (status, body["error"]) == (400, "invalid_client")


@pytest.mark.parametrize("failure", ["unreachable", "oversized", "bad_json", "unknown_kid_too_soon"])
def test_keys_that_cannot_be_had_are_invalid_client(
    app: Flask, clock: FixedClock, client_id: str, jwks_server: JwksServer, failure: str,
) -> None:
    key = new_key("k1")
    jwks_server.serve_keys(key)
    if failure == "unreachable":
        jwks_server.status = 500
    elif failure == "oversized":
        jwks_server.body = b" " * (MAX_JWKS_BYTES + 1)
    elif failure == "bad_json":
        jwks_server.body = b"{not json"
    else:  # the client rotates, and asserts with its new key before the refetch interval is over
        assert push(app, client_id, key)[0] == 201
        key = new_key("k2")
        jwks_server.serve_keys(key)
    status, body = push(app, client_id, key)
    assert (status, body["error"]) == (400, "invalid_client")
    assert jwks_server.hits == 1


@pytest.mark.parametrize("reason", list(Reason), ids=lambda reason: reason.value)
def test_every_reason_is_documented_in_the_events(reason: Reason) -> None:
    events = (Path(__file__).resolve().parents[3] / "docs" / "events.md").read_text(encoding="utf-8")
    assert f"`{reason.value}`" in events.split("`client_keys.unavailable reason=`")[1]


def test_a_failed_refetch_for_an_unknown_kid_keeps_the_fresh_set(jwks_server: JwksServer, clock: FixedClock) -> None:
    jwks_server.serve_keys(new_key("k1"))
    sets = key_sets(clock)
    assert kids(sets, jwks_server, "k1") == {"k1"}
    jwks_server.status = 503
    clock.advance(INTERVAL)
    assert unavailable(sets, jwks_server, "made-up") is Reason.UNREACHABLE
    assert kids(sets, jwks_server, "k1") == {"k1"}
    assert jwks_server.hits == 2
