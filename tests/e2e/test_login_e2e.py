"""Log in with My Number end to end over real HTTP: the portal under gunicorn (2 workers, Redis,
PostgreSQL), a simulated phone enrolled with a simulated card, and relying parties using Authlib's
client: the demo RP (Flask integration) and a bare ``OAuth2Session`` that checks the ID token
against ``/jwks`` with joserfc and reads the consented attributes from ``/userinfo``.

The browser is a ``requests`` session; the world (``world.py``) is built once for this module.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet
from world import RP_SCOPES, SIGN_PIN, TARO, element_text, login_world, qr_payload

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def world(tmp_path_factory, postgres_url, redis_url):
    with login_world(tmp_path_factory.mktemp("login-e2e"), admin_database_url=postgres_url,
                     redis_url=redis_url) as world:
        yield world


def test_demo_rp_login_approved_on_the_phone_shows_the_name(world):
    browser = requests.Session()
    assert browser.get(world.rp_url + "/", timeout=10).status_code == 200
    page = browser.post(world.rp_url + "/login", timeout=10)
    assert page.status_code == 200, page.text
    assert page.url.startswith(world.portal.url + "/authorize?")
    assert element_text(page.text, "rp-name") == "Demo Shop"

    transaction = world.phone.lookup(qr_payload(page.text))
    assert transaction["rp_name"] == "Demo Shop"
    assert transaction["verification_code"] == element_text(page.text, "verification-code")
    assert sorted(transaction["requested_attributes"]) == ["address", "birthdate", "gender", "name"]
    assert world.phone.approve(transaction) == {"status": "approved"}

    status_url = world.portal.url + _attribute(page.text, "data-status-url")
    assert browser.get(status_url, timeout=10).json()["status"] == "approved"
    landed = browser.get(world.portal.url + _attribute(page.text, "data-continue-url"), timeout=10)
    assert landed.status_code == 200, landed.text
    assert landed.url == world.rp_url + "/"
    assert [hop.url.split("?")[0] for hop in landed.history][-1] == world.rp_url + "/callback"
    assert element_text(landed.text, "user-name") == TARO.name


def test_rp_checks_the_id_token_against_jwks_and_reads_consented_userinfo(world):
    metadata = requests.get(world.portal.url + "/.well-known/openid-configuration", timeout=10).json()
    assert metadata["issuer"] == world.portal.url
    client = world.rp_client
    rp = OAuth2Session(client.client_id, client.client_secret, scope=" ".join(RP_SCOPES),
                       redirect_uri=client.redirect_uris[0], code_challenge_method="S256",
                       token_endpoint_auth_method="client_secret_basic")
    verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    authorize_url, state = rp.create_authorization_url(metadata["authorization_endpoint"], code_verifier=verifier,
                                                       nonce=nonce)
    browser = requests.Session()
    page = browser.get(authorize_url, timeout=10)
    assert page.status_code == 200, page.text
    world.phone.approve(world.phone.lookup(qr_payload(page.text)))
    redirect = browser.get(world.portal.url + _attribute(page.text, "data-continue-url"), allow_redirects=False,
                           timeout=10)
    assert redirect.status_code in {302, 303}, redirect.text
    callback = redirect.headers["Location"]
    assert callback.split("?")[0] == client.redirect_uris[0]
    assert f"state={state}" in urlsplit(callback).query

    token = rp.fetch_token(metadata["token_endpoint"], authorization_response=callback, code_verifier=verifier)
    SEEN_SECRETS.extend([token["access_token"], token["refresh_token"], token["id_token"], verifier,
                         *(value for name, value in [part.split("=", 1) for part in urlsplit(callback).query.split("&")]
                           if name == "code")])
    keys = KeySet.import_key_set(requests.get(metadata["jwks_uri"], timeout=10).json())
    id_token = jwt.decode(token["id_token"], keys, algorithms=["ES256"])
    assert id_token.header["alg"] == "ES256"
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": world.portal.url},
        aud={"essential": True, "value": client.client_id},
        nonce={"essential": True, "value": nonce},
        sub={"essential": True}, exp={"essential": True}, iat={"essential": True},
        auth_time={"essential": True},
    ).validate(id_token.claims)
    assert id_token.claims["acr"] == "urn:myna-gateway:acr:smartphone-se"

    userinfo = rp.get(metadata["userinfo_endpoint"], timeout=10).json()
    assert userinfo["sub"] == id_token.claims["sub"]
    assert userinfo["name"] == TARO.name
    assert userinfo["address"] == {"formatted": TARO.address}
    assert userinfo["birthdate"] == TARO.date_of_birth.isoformat()
    assert userinfo["gender"] == "male"
    evidence = userinfo["verified_claims"]["verification"]["evidence"][0]
    assert int(evidence["serial_number"], 16) == world.phone.enrollment.sign_certificate.serial_number


SEEN_SECRETS: list[str] = []
"""Tokens, the code and the PKCE verifier of the ceremony above, for the log and metrics scan below."""


def test_logs_and_metrics_hold_no_token_code_pin_or_attribute(world):
    assert SEEN_SECRETS, "runs after the ceremony test of this module"
    metrics = requests.get(world.portal.url + "/metrics", timeout=10)
    assert metrics.status_code == 200  # loopback may read it
    assert "myna_ceremonies_completed_total" in metrics.text
    log = world.server.log.read_text(encoding="utf-8", errors="replace")
    assert "http.request" in log  # the access log is there to be scanned
    forbidden = [*SEEN_SECRETS, TARO.name, *TARO.name.split("\u3000"), TARO.address, TARO.date_of_birth.isoformat(),
                 SIGN_PIN, world.rp_client.client_secret]  # the 4-digit PIN is too short to scan for
    for text, where in ((log, "the portal's log"), (metrics.text, "/metrics")):
        leaked = [secret[:12] + "…" for secret in forbidden if secret and secret in text]
        assert not leaked, f"{where} holds {leaked}"


def _attribute(page: str, name: str) -> str:
    start = page.index(f'{name}="') + len(name) + 2
    return page[start:page.index('"', start)]
