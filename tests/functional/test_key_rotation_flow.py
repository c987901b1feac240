"""Token-signing key rotation seen by an RP over HTTP: /jwks, and the ID tokens of real code flows.

The portal runs on a ``FixedClock``; ``rotate_signing_key`` is what ``idp keys rotate`` does. The
RP keeps the JWK Set it fetched, as RPs cache ``/jwks`` for its ``Cache-Control`` max-age, and
must verify every ID token with it; the phone's approval is settled through the transaction
store, as in test_oidc_flow.py.
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet

from idp.app import create_app, services
from idp.ceremonies.records import DeviceRecord, DeviceStatus, PersonRecord
from idp.ceremonies.transactions import Outcome, OutcomeKind
from idp.clock import FixedClock
from idp.oidc.discovery import ACR_VALUES
from idp.oidc.keys import RELOAD_INTERVAL, init_signing_keys, rotate_signing_key
from idp.pki.service import init_pki
from idp.settings import Settings
from idp.store.database import make_engine, upgrade

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from flask import Flask
    from flask.testing import FlaskClient

ISSUER = "http://127.0.0.1:8000"
REDIRECT_URI = "https://rp.example/callback"
PERSON, DEVICE = "person-1", "device-1"


@pytest.fixture(autouse=True)
def _no_kek_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDP_KEK", raising=False)
    monkeypatch.delenv("IDP_KEK_FILE", raising=False)


@pytest.fixture(params=["embedded", pytest.param("production", marks=[pytest.mark.postgres, pytest.mark.redis])])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(database URL, Redis URL): SQLite + in-process, then PostgreSQL + Redis."""
    if request.param == "embedded":
        return request.getfixturevalue("sqlite_database"), ""
    return request.getfixturevalue("postgres_database"), request.getfixturevalue("redis_url")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings(tmp_path: Path, backend: tuple[str, str]) -> Settings:
    database_url, redis_url = backend
    return Settings(instance=tmp_path, database_url=database_url, redis_url=redis_url,
                    redis_prefix=f"test:{secrets.token_hex(8)}:")


@pytest.fixture
def app(settings: Settings, clock: FixedClock) -> Iterator[Flask]:
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    init_pki(settings.instance, issuer_url=ISSUER, now=clock.now() - timedelta(days=1))
    init_signing_keys(settings.instance)
    app = create_app(settings, clock=clock)
    app.config["TESTING"] = True
    with services(app).sessions.begin() as session:
        session.add(PersonRecord(id=PERSON, created_at=clock.now()))
        session.flush()
        session.add(DeviceRecord(
            id=DEVICE, person_id=PERSON, status=DeviceStatus.ACTIVE.value, created_at=clock.now(),
            revoked_at=None, aaguid="00000000-0000-0000-0000-000000000000",
            auth_credential_id=secrets.token_bytes(16), auth_public_key=b"-", auth_sign_count=0,
            sign_credential_id=secrets.token_bytes(16), sign_public_key=b"-",
            auth_certificate_serial="1", sign_certificate_serial="2",
        ))
    yield app
    services(app).engine.dispose()


class Rp:
    """A registered RP that logs a user in and reads the ID token's header."""

    def __init__(self, app: Flask, clock: FixedClock) -> None:
        registered = services(app).oidc.clients.register(
            name="Example Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic",
            scopes=["openid"], sector="rp.example", now=clock.now(),
        )
        self.app, self.clock = app, clock
        self.client_id, self.secret = registered.client.client_id, registered.client_secret

    def id_token(self) -> str:
        """One whole code flow: /authorize, the phone approves, /continue, /token."""
        browser: FlaskClient = self.app.test_client()
        verifier = generate_token(64)
        params = {
            "response_type": "code", "client_id": self.client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
            "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
            "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256",
        }
        page = browser.get("/authorize", query_string=params)
        found = re.search(r'data-status-url="/login/([^/"]+)/status"', page.text)
        assert found is not None, page.text
        transactions = services(self.app).oidc.transactions
        assert transactions.settle(transactions.get(found.group(1)), Outcome(
            kind=OutcomeKind.APPROVED, person_id=PERSON, device_id=DEVICE, auth_time=self.clock.now(),
            amr=("hwk", "user"), acr=ACR_VALUES[0], consented_attributes=(), signature_certificate_serial=None,
        ))
        location = browser.get(f"/login/{found.group(1)}/continue").headers["Location"]
        code = parse_qs(urlsplit(location).query)["code"][0]
        basic = base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier}
        rp_http = self.app.test_client(use_cookies=False)
        response = rp_http.post("/token", headers={"Authorization": f"Basic {basic}"}, data=form)
        assert response.status_code == 200, response.text
        token: str = response.get_json()["id_token"]
        return token


def jwks(app: Flask) -> dict[str, Any]:
    document: dict[str, Any] = app.test_client().get("/jwks").get_json()
    return document


def es256_kids(document: dict[str, Any]) -> list[str]:
    return [key["kid"] for key in document["keys"] if key["alg"] == "ES256"]


def verified_kid(cached: dict[str, Any], token: str) -> str:
    """The RP's check: the kid's key in its cached JWK Set verifies the ID token."""
    decoded = jwt.decode(token, KeySet.import_key_set(cached), algorithms=["ES256"])  # type: ignore[arg-type]
    assert decoded.claims["iss"] == ISSUER
    kid: str = decoded.header["kid"]
    return kid


def test_rotation_seen_by_an_rp_from_publication_to_retirement(
    app: Flask, settings: Settings, clock: FixedClock,
) -> None:
    rp = Rp(app, clock)
    old = es256_kids(jwks(app))[0]
    assert verified_kid(jwks(app), rp.id_token()) == old

    new = rotate_signing_key(settings.instance, alg="ES256", now=clock.now(),
                             overlap=settings.oidc.key_rotation_overlap, kek=None).kid
    clock.advance(RELOAD_INTERVAL)
    cached = jwks(app)  # the RP fetches /jwks after the publication and keeps it
    assert es256_kids(cached) == [old, new]
    during_overlap = rp.id_token()
    assert verified_kid(cached, during_overlap) == old

    clock.advance(settings.oidc.key_rotation_overlap)
    assert verified_kid(cached, rp.id_token()) == new  # the switch needs no refetch
    assert verified_kid(jwks(app), during_overlap) == old  # tokens of the old key still verify

    clock.advance(settings.oidc.id_token_lifetime)
    assert es256_kids(jwks(app)) == [new]
    with pytest.raises(InvalidKeyIdError):
        verified_kid(jwks(app), during_overlap)


def test_jwks_cache_lifetime_is_shorter_than_the_rotation_overlap(app: Flask, settings: Settings) -> None:
    cache_control = app.test_client().get("/jwks").headers["Cache-Control"]
    max_age = int(re.findall(r"max-age=(\d+)", cache_control)[0])
    assert timedelta(seconds=max_age) < settings.oidc.key_rotation_overlap
