"""The OpenID Connect provider over HTTP: the whole code flow and one test per attack.

Each test builds the portal with ``create_app`` on a fresh instance, once embedded (SQLite and
the in-process store) and once as in production (PostgreSQL and Redis), and drives it with
Flask's test client as a browser and as the RP. The phone's approval is simulated by settling
the login transaction through ``TransactionStore.settle`` (the device API is tested on its own).
No mocks.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from cryptography import x509
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from idp.app import create_app, services
from idp.ceremonies.records import DeviceRecord, DeviceStatus, PersonRecord
from idp.ceremonies.transactions import Outcome, OutcomeKind
from idp.clock import FixedClock
from idp.oidc.codes import code_hash
from idp.oidc.discovery import ACR_VALUES
from idp.oidc.grants_records import Grant
from idp.oidc.keys import init_signing_keys
from idp.pki import attributes
from idp.pki.profiles import (
    CARD_AUTH,
    JLIS_ROOT,
    SMARTPHONE_SIGN,
    Issuer,
    KeyAlgorithm,
    build_certificate,
    card_auth_subject,
    generate_key,
    jlis_name,
)
from idp.pki.service import init_pki
from idp.settings import LoginSettings, Settings
from idp.store.database import make_engine, upgrade

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from flask import Flask
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

ISSUER = "http://127.0.0.1:8000"
REDIRECT_URI = "https://rp.example/callback"
TARO = attributes.BasicAttributes(
    name="山田　太郎", address="東京都千代田区千代田１－１", date_of_birth=date(1990, 5, 15), sex=attributes.Sex.MALE,
)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALL_SCOPES = ["openid", "name", "address", "birthdate", "gender"]


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
def login_settings() -> LoginSettings:
    return LoginSettings()


@pytest.fixture
def app(tmp_path: Path, backend: tuple[str, str], clock: FixedClock, login_settings: LoginSettings) -> Iterator[Flask]:
    database_url, redis_url = backend
    settings = Settings(instance=tmp_path, database_url=database_url, redis_url=redis_url, login=login_settings,
                        redis_prefix=f"test:{secrets.token_hex(8)}:")  # keys expire; counters are this test's
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    init_pki(tmp_path, issuer_url=ISSUER, now=clock.now() - timedelta(days=1))
    init_signing_keys(tmp_path)
    app = create_app(settings, clock=clock)
    app.config["TESTING"] = True
    enroll_device(app, clock, DEVICE, person=PERSON)
    yield app
    services(app).engine.dispose()


PERSON, DEVICE = "person-1", "device-1"
"""The person and phone that ``approved`` outcomes name: enrolled (as rows) by the ``app`` fixture."""


def enroll_device(app: Flask, clock: FixedClock, device_id: str, *, person: str) -> None:
    """A person and an active phone, as enrollment would record them (the keys are never used here)."""
    with services(app).sessions.begin() as session:
        if session.get(PersonRecord, person) is None:
            session.add(PersonRecord(id=person, created_at=clock.now()))
            session.flush()  # no ORM relationship orders the two inserts
        session.add(DeviceRecord(
            id=device_id, person_id=person, status=DeviceStatus.ACTIVE.value, created_at=clock.now(),
            revoked_at=None, aaguid="00000000-0000-0000-0000-000000000000",
            auth_credential_id=secrets.token_bytes(16), auth_public_key=b"-", auth_sign_count=0,
            sign_credential_id=secrets.token_bytes(16), sign_public_key=b"-",
            auth_certificate_serial="1", sign_certificate_serial="2",
        ))


@pytest.fixture
def browser(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def rp_http(app: Flask) -> FlaskClient:
    """The relying party's back channel: a client without the browser's cookies."""
    return app.test_client(use_cookies=False)


@dataclass(frozen=True)
class Rp:
    client_id: str
    secret: str | None = None
    key: ECKey | None = None

    def auth(self) -> dict[str, str]:
        if self.secret is None:
            return {}
        raw = base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}


def register(app: Flask, clock: FixedClock, **overrides: Any) -> Rp:
    values: dict[str, Any] = {
        "name": "Example Shop", "redirect_uris": [REDIRECT_URI], "auth_method": "client_secret_basic",
        "scopes": ALL_SCOPES, "sector": "rp.example", "now": clock.now(),
    }
    values.update(overrides)
    key = None
    if values["auth_method"] == "private_key_jwt" and "jwks" not in values:
        key = ECKey.generate_key("P-256", parameters={"kid": "rp-key"})
        values["jwks"] = {"keys": [key.as_dict(private=False)]}
    registered = services(app).oidc.clients.register(**values)
    return Rp(registered.client.client_id, registered.client_secret, key)


@pytest.fixture
def rp(app: Flask, clock: FixedClock) -> Rp:
    return register(app, clock)


@dataclass
class Login:
    """One authorization request as the RP made it."""

    params: dict[str, str]
    verifier: str

    @property
    def state(self) -> str:
        return self.params["state"]


def new_login(rp: Rp, **overrides: str | None) -> Login:
    verifier = generate_token(64)
    params: dict[str, str | None] = {
        "response_type": "code", "client_id": rp.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid", "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
        "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256",
    }
    params.update(overrides)
    return Login({name: value for name, value in params.items() if value is not None}, verifier)


def transaction_id(page: TestResponse) -> str:
    found = re.search(r'data-status-url="/login/([^/"]+)/status"', page.text)
    assert found is not None, page.text
    return found.group(1)


def redirect_params(response: TestResponse) -> dict[str, str]:
    assert response.status_code in {302, 303}, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


def assert_error_redirect(response: TestResponse, error: str, login: Login) -> dict[str, str]:
    params = redirect_params(response)
    assert params["error"] == error
    assert params["state"] == login.state
    assert params["iss"] == ISSUER
    return params


def assert_error_page(response: TestResponse, error: str) -> None:
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"
    assert f'<code id="error">{error}</code>' in response.text


def settle(app: Flask, tid: str, outcome: Outcome) -> None:
    oidc = services(app).oidc
    assert oidc.transactions.settle(oidc.transactions.get(tid), outcome)


def approved(clock: FixedClock, *, person: str = PERSON, consented: tuple[str, ...] = (),
             serial: int | None = None, device: str = DEVICE) -> Outcome:
    return Outcome(
        kind=OutcomeKind.APPROVED, person_id=person, device_id=device, auth_time=clock.now(),
        amr=("hwk", "user"), acr=ACR_VALUES[0], consented_attributes=consented, signature_certificate_serial=serial,
    )


def log_in(browser: FlaskClient, app: Flask, login: Login, outcome: Outcome) -> str:
    """Browser → /authorize → the phone approves → /continue; the code."""
    page = browser.get("/authorize", query_string=login.params)
    assert page.status_code == 200, page.text
    tid = transaction_id(page)
    settle(app, tid, outcome)
    params = redirect_params(browser.get(f"/login/{tid}/continue"))
    assert params["state"] == login.state
    assert params["iss"] == ISSUER
    return params["code"]


def redeem(rp_http: FlaskClient, rp: Rp, code: str, verifier: str, **extra: str) -> TestResponse:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
    form.update(extra)
    return rp_http.post("/token", data=form, headers=rp.auth())


def userinfo(rp_http: FlaskClient, access_token: str) -> TestResponse:
    return rp_http.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})


def verify_id_token(browser: FlaskClient, id_token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(browser.get("/jwks").get_json())
    token = jwt.decode(id_token, keys, algorithms=["ES256", "RS256"])
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": ISSUER}).validate(token.claims)
    return {"header": token.header, **token.claims}


@pytest.fixture
def signature_certificate(app: Flask, clock: FixedClock) -> x509.Certificate:
    """A smartphone signature certificate carrying TARO's attributes, issued by the portal CA."""
    root_key = generate_key(KeyAlgorithm.RSA_2048)
    root = Issuer(build_certificate(
        profile=JLIS_ROOT, subject=jlis_name("JPKI for user authentication"), public_key=root_key.public_key(),
        issuer=None, signing_key=root_key, not_before=clock.now() - timedelta(days=365),
        not_after=clock.now() + timedelta(days=3650),
    ), root_key)
    card_key = generate_key(KeyAlgorithm.RSA_2048)
    card = build_certificate(
        profile=CARD_AUTH, subject=card_auth_subject("A0001"), public_key=card_key.public_key(), issuer=root,
        not_before=clock.now() - timedelta(days=30), not_after=clock.now() + timedelta(days=1500),
        crl_url="http://jlis.example/crl", ocsp_url="http://jlis.example/ocsp",
    )
    return services(app).pki.issue_smartphone_certificate(
        profile=SMARTPHONE_SIGN, subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "phone sign")]),
        public_key=generate_key(KeyAlgorithm.EC_P256).public_key(), card_certificates=[card], attributes=TARO,
    )


# --- discovery and keys ------------------------------------------------------------------------


def test_discovery_names_the_endpoints_and_the_strict_choices(browser: FlaskClient) -> None:
    metadata = browser.get("/.well-known/openid-configuration").get_json()
    assert metadata["issuer"] == ISSUER
    assert metadata["authorization_endpoint"] == ISSUER + "/authorize"
    assert metadata["pushed_authorization_request_endpoint"] == ISSUER + "/par"
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "private_key_jwt"]
    assert metadata["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]
    assert metadata["subject_types_supported"] == ["pairwise"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["ui_locales_supported"] == ["ja", "en"]
    assert metadata["verified_claims_supported"] is True
    assert metadata["authorization_details_types_supported"] == ["document_signature"]
    assert metadata["scopes_supported"] == ["openid", "name", "address", "birthdate", "gender", "sign"]
    assert metadata["signing_results_endpoint"] == metadata["issuer"] + "/signing/v1/results"
    assert metadata["signing_verification_endpoint"] == metadata["issuer"] + "/signing/verify"
    assert metadata["timestamping_endpoint"] == metadata["issuer"] + "/tsa"


def test_jwks_holds_public_keys_only(browser: FlaskClient) -> None:
    keys = browser.get("/jwks").get_json()["keys"]
    assert sorted(key["alg"] for key in keys) == ["ES256", "RS256"]
    assert all("d" not in key and "p" not in key for key in keys)


# --- the whole flow ----------------------------------------------------------------------------


def test_code_flow_issues_a_verifiable_id_token_and_userinfo(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
) -> None:
    login = new_login(rp)
    page = browser.get("/authorize", query_string=login.params)
    assert page.status_code == 200
    assert "Example Shop" in page.text
    assert "myna-gateway://transaction?id=" in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<script>" not in page.text
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    tid = transaction_id(page)
    assert browser.get(f"/login/{tid}/status").get_json()["status"] == "pending"
    settle(app, tid, approved(clock))
    assert browser.get(f"/login/{tid}/status").get_json() == {"status": "approved"}
    code = redirect_params(browser.get(f"/login/{tid}/continue"))["code"]

    response = redeem(rp_http, rp, code, login.verifier)
    assert response.status_code == 200, response.text
    tokens = response.get_json()
    assert tokens["token_type"] == "Bearer"
    claims = verify_id_token(browser, tokens["id_token"])
    assert claims["header"]["alg"] == "ES256"
    assert claims["aud"] == rp.client_id
    assert claims["nonce"] == login.params["nonce"]
    assert claims["acr"] == ACR_VALUES[0]
    assert claims["amr"] == ["hwk", "user"]
    assert claims["auth_time"] == int(clock.now().timestamp())
    assert claims["sid"]
    info = userinfo(rp_http, tokens["access_token"]).get_json()
    assert info == {"sub": claims["sub"]}


def test_rs256_client_gets_an_rs256_id_token(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, clock: FixedClock,
) -> None:
    rp = register(app, clock, id_token_alg="RS256")
    login = new_login(rp)
    tokens = redeem(rp_http, rp, log_in(browser, app, login, approved(clock)), login.verifier).get_json()
    assert verify_id_token(browser, tokens["id_token"])["header"]["alg"] == "RS256"


def test_sub_is_pairwise_per_sector(browser: FlaskClient, rp_http: FlaskClient, app: Flask, clock: FixedClock) -> None:
    same_sector = [register(app, clock), register(app, clock, name="Shop Two")]
    other_sector = register(app, clock, name="Other", redirect_uris=[REDIRECT_URI], sector="other.example")
    subjects = []
    for client in [*same_sector, other_sector]:
        login = new_login(client)
        tokens = redeem(rp_http, client, log_in(browser, app, login, approved(clock)), login.verifier).get_json()
        subjects.append(verify_id_token(browser, tokens["id_token"])["sub"])
    assert subjects[0] == subjects[1]
    assert subjects[2] != subjects[0]
    assert "person-1" not in subjects


def test_consented_attributes_are_released_with_verified_claims(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
    signature_certificate: x509.Certificate,
) -> None:
    login = new_login(rp, scope="openid name birthdate")
    outcome = approved(clock, consented=("name", "birthdate"), serial=signature_certificate.serial_number)
    tokens = redeem(rp_http, rp, log_in(browser, app, login, outcome), login.verifier).get_json()
    info = userinfo(rp_http, tokens["access_token"]).get_json()
    assert info["name"] == TARO.name
    assert info["birthdate"] == "1990-05-15"
    assert "address" not in info
    assert "gender" not in info
    verified = info["verified_claims"]
    assert verified["claims"] == {"name": TARO.name, "birthdate": "1990-05-15"}
    assert verified["verification"]["trust_framework"] == "jp_jpki"
    evidence = verified["verification"]["evidence"][0]
    assert evidence["type"] == "electronic_signature"
    assert evidence["serial_number"] == format(signature_certificate.serial_number, "X")
    assert evidence["issuer"] == signature_certificate.issuer.rfc4514_string()


def test_attributes_without_consent_are_not_released(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
    signature_certificate: x509.Certificate,
) -> None:
    login = new_login(rp, scope="openid name address")
    outcome = approved(clock, consented=("name",), serial=signature_certificate.serial_number)
    tokens = redeem(rp_http, rp, log_in(browser, app, login, outcome), login.verifier).get_json()
    info = userinfo(rp_http, tokens["access_token"]).get_json()
    assert "address" not in info
    assert set(info) == {"sub", "name", "verified_claims"}


def test_revoked_consent_stops_the_release(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
    signature_certificate: x509.Certificate,
) -> None:
    login = new_login(rp, scope="openid name")
    outcome = approved(clock, consented=("name",), serial=signature_certificate.serial_number)
    tokens = redeem(rp_http, rp, log_in(browser, app, login, outcome), login.verifier).get_json()
    assert services(app).oidc.consents.revoke(person_id="person-1", client_id=rp.client_id, now=clock.now()) == 1
    assert set(userinfo(rp_http, tokens["access_token"]).get_json()) == {"sub"}


def test_consent_is_one_standing_record_widened_by_later_logins(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
    signature_certificate: x509.Certificate,
) -> None:
    consents = services(app).oidc.consents
    for scope, consented in [("openid name", ("name",)), ("openid name", ("name",)),
                             ("openid name address", ("name", "address"))]:
        login = new_login(rp, scope=scope)
        outcome = approved(clock, consented=consented, serial=signature_certificate.serial_number)
        redeem(rp_http, rp, log_in(browser, app, login, outcome), login.verifier)
    assert consents.granted(person_id="person-1", client_id=rp.client_id) == {"name", "address"}
    assert consents.revoke(person_id="person-1", client_id=rp.client_id, now=clock.now()) == 1  # one record
    assert consents.granted(person_id="person-1", client_id=rp.client_id) == frozenset()


def test_grant_revoked_in_the_database_stops_its_access_token(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
) -> None:
    login = new_login(rp)
    code = log_in(browser, app, login, approved(clock))
    tokens = redeem(rp_http, rp, code, login.verifier).get_json()
    assert userinfo(rp_http, tokens["access_token"]).status_code == 200
    # As `idp pki sync-revocations` does from another process: the database only, no ephemeral store.
    assert services(app).oidc.grants.revoke(code_hash(code), now=clock.now())
    refused = userinfo(rp_http, tokens["access_token"])
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "invalid_token"
    assert refused.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_claims_parameter_puts_consented_attributes_in_the_id_token(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
    signature_certificate: x509.Certificate,
) -> None:
    login = new_login(rp, claims=json.dumps({"id_token": {"name": {"essential": True}}}))
    outcome = approved(clock, consented=("name",), serial=signature_certificate.serial_number)
    tokens = redeem(rp_http, rp, log_in(browser, app, login, outcome), login.verifier).get_json()
    assert verify_id_token(browser, tokens["id_token"])["name"] == TARO.name


# --- the authorization endpoint: shown, never redirected ---------------------------------------


def test_unknown_client_is_shown_not_redirected(browser: FlaskClient, rp: Rp) -> None:
    login = new_login(rp, client_id="no-such-client")
    assert_error_page(browser.get("/authorize", query_string=login.params), "invalid_client")


def test_redirect_uri_mismatch_is_shown_not_redirected(browser: FlaskClient, rp: Rp) -> None:
    login = new_login(rp, redirect_uri="https://evil.example/callback")
    assert_error_page(browser.get("/authorize", query_string=login.params), "invalid_request")


# --- the authorization endpoint: redirected with state and iss ---------------------------------


@pytest.mark.parametrize(("overrides", "error"), [
    pytest.param({"code_challenge": None, "code_challenge_method": None}, "invalid_request", id="missing_pkce"),
    pytest.param({"code_challenge_method": "plain"}, "invalid_request", id="plain_pkce"),
    pytest.param({"nonce": None}, "invalid_request", id="missing_nonce"),
    pytest.param({"response_type": "token"}, "unsupported_response_type", id="response_type_token"),
    pytest.param({"scope": "openid sign"}, "invalid_scope", id="scope_not_allowed"),
    pytest.param({"scope": "profile"}, "invalid_scope", id="openid_missing"),
    pytest.param({"claims": "{not json"}, "invalid_request", id="malformed_claims"),
    pytest.param({"claims": "[" * 1000 + "]" * 1000}, "invalid_request", id="claims_nested_past_parser_depth"),
    pytest.param({"prompt": "none"}, "login_required", id="prompt_none_without_session"),
    pytest.param({"max_age": "-1"}, "invalid_request", id="bad_max_age"),
    pytest.param({"request": "eyJ..."}, "request_not_supported", id="request_object"),
])
def test_bad_authorization_request_is_redirected_with_state_and_iss(
    browser: FlaskClient, app: Flask, clock: FixedClock, overrides: dict[str, str | None], error: str,
) -> None:
    rp = register(app, clock, scopes=["openid", "name"])
    login = new_login(rp, **overrides)
    assert_error_redirect(browser.get("/authorize", query_string=login.params), error, login)


def test_plain_pkce_says_what_to_fix(browser: FlaskClient, rp: Rp) -> None:
    login = new_login(rp, code_challenge_method="plain")
    params = assert_error_redirect(browser.get("/authorize", query_string=login.params), "invalid_request", login)
    assert params["error_description"] == "code_challenge_method must be S256"


def test_require_par_client_without_par_is_refused(browser: FlaskClient, app: Flask, clock: FixedClock) -> None:
    rp = register(app, clock, require_par=True)
    login = new_login(rp)
    assert_error_redirect(browser.get("/authorize", query_string=login.params), "invalid_request", login)


# --- PAR ---------------------------------------------------------------------------------------


def push(rp_http: FlaskClient, rp: Rp, login: Login) -> TestResponse:
    return rp_http.post("/par", data=login.params, headers=rp.auth())


def test_pushed_request_logs_in_once(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, clock: FixedClock,
) -> None:
    rp = register(app, clock, require_par=True)
    login = new_login(rp)
    pushed = push(rp_http, rp, login)
    assert pushed.status_code == 201, pushed.text
    body = pushed.get_json()
    assert body["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    assert body["expires_in"] == 60
    query = {"client_id": rp.client_id, "request_uri": body["request_uri"]}
    page = browser.get("/authorize", query_string=query)
    assert page.status_code == 200
    settle(app, transaction_id(page), approved(clock))
    assert redirect_params(browser.get(f"/login/{transaction_id(page)}/continue"))["state"] == login.state
    assert_error_page(browser.get("/authorize", query_string=query), "invalid_request_uri")


def test_pushed_request_uri_of_another_client_is_refused(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
) -> None:
    other = register(app, clock, name="Other")
    request_uri = push(rp_http, rp, new_login(rp)).get_json()["request_uri"]
    query = {"client_id": other.client_id, "request_uri": request_uri}
    assert_error_page(browser.get("/authorize", query_string=query), "invalid_request_uri")
    # Not burnt by the other client: the pusher can still use it.
    own = {"client_id": rp.client_id, "request_uri": request_uri}
    assert browser.get("/authorize", query_string=own).status_code == 200


def test_par_requires_client_authentication(rp_http: FlaskClient, rp: Rp) -> None:
    response = rp_http.post("/par", data=new_login(rp).params)
    assert response.status_code in {400, 401}
    assert response.get_json()["error"] == "invalid_client"


def test_par_refuses_a_request_uri_inside(rp_http: FlaskClient, rp: Rp) -> None:
    login = new_login(rp, request_uri="urn:ietf:params:oauth:request_uri:x")
    response = push(rp_http, rp, login)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_par_runs_the_authorization_checks(rp_http: FlaskClient, rp: Rp) -> None:
    response = push(rp_http, rp, new_login(rp, code_challenge_method="plain"))
    assert response.status_code == 400
    body = response.get_json()
    assert body == {"error": "invalid_request", "error_description": "code_challenge_method must be S256"}


# --- the login page: cancel, decline, expiry, another browser ---------------------------------


def test_cancel_returns_access_denied(browser: FlaskClient, rp: Rp) -> None:
    login = new_login(rp)
    tid = transaction_id(browser.get("/authorize", query_string=login.params))
    assert_error_redirect(browser.post(f"/login/{tid}/cancel"), "access_denied", login)
    assert browser.get(f"/login/{tid}/status").get_json()["status"] == "cancelled"


def test_declined_on_the_phone_returns_access_denied(browser: FlaskClient, app: Flask, rp: Rp) -> None:
    login = new_login(rp)
    tid = transaction_id(browser.get("/authorize", query_string=login.params))
    settle(app, tid, Outcome(kind=OutcomeKind.DECLINED))
    assert browser.get(f"/login/{tid}/status").get_json()["status"] == "declined"
    assert_error_redirect(browser.get(f"/login/{tid}/continue"), "access_denied", login)


@pytest.mark.parametrize("login_settings", [LoginSettings(transaction_ttl=timedelta(seconds=1))])
def test_expired_transaction_returns_access_denied(
    browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, backend: tuple[str, str],
) -> None:
    login = new_login(rp)
    tid = transaction_id(browser.get("/authorize", query_string=login.params))
    clock.advance(timedelta(seconds=2))
    if backend[1]:
        time.sleep(1.1)  # Redis keeps its own time
    assert browser.get(f"/login/{tid}/status").get_json()["status"] == "expired"
    params = assert_error_redirect(browser.get(f"/login/{tid}/continue"), "access_denied", login)
    assert params["error_description"] == "the login expired"


def test_continue_from_another_browser_is_refused(browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock) -> None:
    tid = transaction_id(browser.get("/authorize", query_string=new_login(rp).params))
    settle(app, tid, approved(clock))
    stranger = app.test_client()
    response = stranger.get(f"/login/{tid}/continue")
    assert response.status_code == 403
    assert "Location" not in response.headers
    assert stranger.get(f"/login/{tid}/status").status_code == 403
    assert stranger.post(f"/login/{tid}/cancel").status_code == 403
    assert "code" in redirect_params(browser.get(f"/login/{tid}/continue"))  # the starting browser still can


def test_second_continue_fails_cleanly(browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock) -> None:
    tid = transaction_id(browser.get("/authorize", query_string=new_login(rp).params))
    settle(app, tid, approved(clock))
    assert "code" in redirect_params(browser.get(f"/login/{tid}/continue"))
    assert_error_page(browser.get(f"/login/{tid}/continue"), "invalid_request")


def test_login_page_draws_the_qr_code_in_the_browser_and_offers_an_image_without_script(
    browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
) -> None:
    page = browser.get("/authorize", query_string=new_login(rp).params)
    tid = transaction_id(page)
    payload = re.search(r'<img id="qr" data-payload="([^"]+)"', page.text).group(1)
    assert payload.startswith(f"myna.{tid}.")
    assert "/static/vendor/qrcode-generator-2.0.4.js" in page.text
    assert browser.get("/login/static/vendor/qrcode-generator-2.0.4.js").status_code == 200
    assert f'<noscript><meta http-equiv="refresh" content="2; url=/login/{tid}/continue"></noscript>' in page.text
    status = browser.get(f"/login/{tid}/status").get_json()
    assert set(status) == {"status", "qr_payload", "same_device"}  # a payload, no image

    image = browser.get(f"/login/{tid}/qr.svg")
    assert image.status_code == 200
    assert image.mimetype == "image/svg+xml"
    assert image.headers["Cache-Control"] == "no-store"
    assert image.data.startswith(b"<?xml")
    assert b"<svg" in image.data
    assert app.test_client().get(f"/login/{tid}/qr.svg").status_code == 404  # another browser
    assert browser.get("/login/no-such-login/qr.svg").status_code == 404
    settle(app, tid, approved(clock))
    assert browser.get(f"/login/{tid}/qr.svg").status_code == 409  # decided: nothing left to scan


def test_login_page_follows_ui_locales(browser: FlaskClient, rp: Rp) -> None:
    english = browser.get("/authorize", query_string=new_login(rp, ui_locales="en").params)
    assert "Log in with My Number" in english.text
    japanese = browser.get("/authorize", query_string=new_login(rp).params, headers={"Accept-Language": "ja"})
    assert "マイナンバーでログイン" in japanese.text


# --- the token endpoint ------------------------------------------------------------------------


def test_wrong_pkce_verifier_is_invalid_grant(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
) -> None:
    login = new_login(rp)
    response = redeem(rp_http, rp, log_in(browser, app, login, approved(clock)), generate_token(64))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


def test_code_redeemed_twice_revokes_tokens(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
) -> None:
    login = new_login(rp)
    code = log_in(browser, app, login, approved(clock))
    first = redeem(rp_http, rp, code, login.verifier).get_json()
    assert userinfo(rp_http, first["access_token"]).status_code == 200
    second = redeem(rp_http, rp, code, login.verifier)
    assert second.status_code == 400
    assert second.get_json()["error"] == "invalid_grant"
    assert userinfo(rp_http, first["access_token"]).status_code == 401
    refreshed = rp_http.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                             headers=rp.auth())
    assert refreshed.get_json()["error"] == "invalid_grant"


def test_code_of_a_phone_revoked_before_redemption_grants_nothing(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
) -> None:
    enroll_device(app, clock, "lost-phone", person=PERSON)
    login = new_login(rp)
    code = log_in(browser, app, login, approved(clock, device="lost-phone"))
    with services(app).sessions.begin() as session:  # the phone is revoked after approving, before redemption
        phone = session.get(DeviceRecord, "lost-phone")
        phone.status, phone.revoked_at = DeviceStatus.REVOKED.value, clock.now()
    response = redeem(rp_http, rp, code, login.verifier)
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "invalid_grant", "error_description": "the phone that approved this login has been revoked",
    }
    with services(app).sessions.begin() as session:
        assert session.get(Grant, code_hash(code)) is None  # nothing half-written


def test_client_secret_basic_with_wrong_secret_is_401(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
) -> None:
    login = new_login(rp)
    code = log_in(browser, app, login, approved(clock))
    response = redeem(rp_http, replace(rp, secret="wrong"), code, login.verifier)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_refresh_token_rotates_and_reuse_revokes_the_family(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
) -> None:
    login = new_login(rp)
    first = redeem(rp_http, rp, log_in(browser, app, login, approved(clock)), login.verifier).get_json()

    def refresh(token: str) -> TestResponse:
        return rp_http.post("/token", data={"grant_type": "refresh_token", "refresh_token": token}, headers=rp.auth())

    second = refresh(first["refresh_token"]).get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert userinfo(rp_http, second["access_token"]).status_code == 200
    reused = refresh(first["refresh_token"])
    assert reused.status_code == 400
    assert reused.get_json()["error"] == "invalid_grant"
    assert refresh(second["refresh_token"]).get_json()["error"] == "invalid_grant"
    assert userinfo(rp_http, second["access_token"]).status_code == 401


# --- private_key_jwt ---------------------------------------------------------------------------


def assertion(rp: Rp, *, key: ECKey | None = None, aud: str = ISSUER + "/token", jti: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": rp.client_id, "sub": rp.client_id, "aud": aud, "iat": now, "exp": now + 60,
              "jti": jti or secrets.token_urlsafe(16)}
    signing = key or rp.key
    assert signing is not None
    return jwt.encode({"alg": "ES256", "kid": "rp-key"}, claims, signing, algorithms=["ES256"])


def redeem_with_jwt(rp_http: FlaskClient, code: str, login: Login, client_assertion: str) -> TestResponse:
    return rp_http.post("/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
        "code_verifier": login.verifier, "client_assertion": client_assertion,
        "client_assertion_type": ASSERTION_TYPE,
    })


@pytest.fixture
def jwt_rp(app: Flask, clock: FixedClock) -> Rp:
    return register(app, clock, auth_method="private_key_jwt")


def test_private_key_jwt_client_redeems_its_code(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, jwt_rp: Rp, clock: FixedClock,
) -> None:
    login = new_login(jwt_rp)
    response = redeem_with_jwt(rp_http, log_in(browser, app, login, approved(clock)), login, assertion(jwt_rp))
    assert response.status_code == 200, response.text
    assert verify_id_token(browser, response.get_json()["id_token"])["aud"] == jwt_rp.client_id


@pytest.mark.parametrize("attack", ["wrong_key", "reused_jti", "wrong_aud"])
def test_bad_client_assertion_is_invalid_client(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, jwt_rp: Rp, clock: FixedClock, attack: str,
) -> None:
    login = new_login(jwt_rp)
    code = log_in(browser, app, login, approved(clock))
    if attack == "wrong_key":
        bad = assertion(jwt_rp, key=ECKey.generate_key("P-256"))
    elif attack == "wrong_aud":
        bad = assertion(jwt_rp, aud="https://other.example/token")
    else:
        bad = assertion(jwt_rp, jti="once")
        first = rp_http.post("/par", data={
            **new_login(jwt_rp).params, "client_assertion": bad, "client_assertion_type": ASSERTION_TYPE,
        })
        assert first.status_code == 201, first.text
    response = redeem_with_jwt(rp_http, code, login, bad)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_client"


# --- userinfo ----------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}], ids=["without", "bad"])
def test_userinfo_without_a_valid_token_is_401(rp_http: FlaskClient, headers: dict[str, str]) -> None:
    response = rp_http.get("/userinfo", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
