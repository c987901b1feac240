"""The portal session and ``prompt=none`` (OIDC Core §3.1.2.1, §3.1.2.6).

A completed login leaves a portal session in the browser. A ``prompt=none`` request is answered
from it without any page: a code naming the session's login, or an error redirected with
``state`` and ``iss``: login_required without a session, past max_age, for max_age=0, or once
the session's phone or its certificates stopped standing (the session then ends);
consent_required for attributes the person has not consented to. A request without
``prompt=none`` always asks the phone. Embedded and on PostgreSQL + Redis, no mocks.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import test_oidc_flow as flow
from cryptography import x509
from cryptography.x509.oid import NameOID
from test_oidc_flow import (
    ISSUER,
    PERSON,
    TARO,
    Login,
    Rp,
    approved,
    assert_error_redirect,
    log_in,
    new_login,
    redeem,
    redirect_params,
    userinfo,
    verify_id_token,
)

from idp.app import create_app, services
from idp.ceremonies.records import DeviceRecord, DeviceStatus
from idp.oidc.keys import init_signing_keys
from idp.pki.profiles import (
    CARD_AUTH,
    JLIS_ROOT,
    SMARTPHONE_AUTH,
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
    from pathlib import Path

    from flask import Flask
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from idp.clock import FixedClock

# The code flow's fixtures: one portal per test, embedded and on PostgreSQL + Redis.
app, backend, browser, clock, login_settings, rp, rp_http = (
    flow.app, flow.backend, flow.browser, flow.clock, flow.login_settings, flow.rp, flow.rp_http,
)

SESSION_COOKIE = "myna_session"


@dataclass(frozen=True)
class Phone:
    """An enrolled phone with real smartphone certificates issued by the portal CA."""

    device_id: str
    auth: x509.Certificate
    sign: x509.Certificate


def enroll_phone(
    app: Flask, clock: FixedClock, *, person: str = PERSON, card_lifetime: timedelta = timedelta(days=1500),
) -> Phone:
    """Issue the phone's user-auth and signature certificates (TARO's attributes) and record the phone.

    They expire with the card certificate they come from, ``card_lifetime`` from now.
    """
    root_key = generate_key(KeyAlgorithm.RSA_2048)
    root = Issuer(build_certificate(
        profile=JLIS_ROOT, subject=jlis_name("JPKI for user authentication"), public_key=root_key.public_key(),
        issuer=None, signing_key=root_key, not_before=clock.now() - timedelta(days=365),
        not_after=clock.now() + timedelta(days=3650),
    ), root_key)
    card = build_certificate(
        profile=CARD_AUTH, subject=card_auth_subject("A0001"), public_key=generate_key(KeyAlgorithm.RSA_2048)
        .public_key(), issuer=root, not_before=clock.now() - timedelta(days=30),
        not_after=clock.now() + card_lifetime, crl_url="http://jlis.example/crl",
        ocsp_url="http://jlis.example/ocsp",
    )
    pki = services(app).pki
    auth, sign = (
        pki.issue_smartphone_certificate(
            profile=profile, subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "phone")]),
            public_key=generate_key(KeyAlgorithm.EC_P256).public_key(), card_certificates=[card],
            attributes=attributes,
        )
        for profile, attributes in ((SMARTPHONE_AUTH, None), (SMARTPHONE_SIGN, TARO))
    )
    device_id = "phone-" + secrets.token_hex(4)
    with services(app).sessions.begin() as session:
        session.add(DeviceRecord(
            id=device_id, person_id=person, status=DeviceStatus.ACTIVE.value, created_at=clock.now(),
            revoked_at=None, aaguid="00000000-0000-0000-0000-000000000000",
            auth_credential_id=secrets.token_bytes(16), auth_public_key=b"-", auth_sign_count=0,
            sign_credential_id=secrets.token_bytes(16), sign_public_key=b"-",
            auth_certificate_serial=str(auth.serial_number), sign_certificate_serial=str(sign.serial_number),
        ))
    return Phone(device_id, auth, sign)


@pytest.fixture
def phone(app: Flask, clock: FixedClock) -> Phone:
    return enroll_phone(app, clock)


def log_in_on(browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone, **params: str) -> Login:
    """An interactive login approved on ``phone``, consenting to whatever it asks for; the request made."""
    login = new_login(rp, **params)
    scope = params.get("scope", "openid").split()
    consented = tuple(name for name in ("name", "address", "birthdate", "gender") if name in scope)
    log_in(browser, app, login, approved(
        clock, device=phone.device_id, consented=consented, serial=phone.sign.serial_number if consented else None,
    ))
    return login


def silently(browser: FlaskClient, rp: Rp, **params: str) -> tuple[Login, TestResponse]:
    login = new_login(rp, prompt="none", **params)
    return login, browser.get("/authorize", query_string=login.params)


# --- the session a login leaves -----------------------------------------------------------------


def test_completed_login_leaves_an_httponly_lax_session_cookie(
    browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    login = new_login(rp)
    page = browser.get("/authorize", query_string=login.params)
    assert SESSION_COOKIE not in page.headers.get("Set-Cookie", "")  # nothing before the login completes
    flow.settle(app, flow.transaction_id(page), approved(clock, device=phone.device_id))
    response = browser.get(f"/login/{flow.transaction_id(page)}/continue")
    cookie = next(value for value in response.headers.getlist("Set-Cookie") if value.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie  # the test issuer is loopback http


def test_session_cookie_on_an_https_issuer_is_secure_and_host_only(tmp_path: Path, clock: FixedClock) -> None:
    database_url = f"sqlite:///{tmp_path / 'idp.sqlite3'}"
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    init_pki(tmp_path, issuer_url="https://id.example", now=clock.now() - timedelta(days=1))
    init_signing_keys(tmp_path)
    https_app = create_app(Settings(instance=tmp_path, database_url=database_url, issuer="https://id.example"),
                           clock=clock)
    flow.enroll_device(https_app, clock, flow.DEVICE, person=PERSON)
    shop = flow.register(https_app, clock)
    https_browser = https_app.test_client()
    login = new_login(shop)
    page = https_browser.get("/authorize", query_string=login.params, base_url="https://id.example")
    tid = flow.transaction_id(page)
    flow.settle(https_app, tid, approved(clock))
    response = https_browser.get(f"/login/{tid}/continue", base_url="https://id.example")
    cookie = next(value for value in response.headers.getlist("Set-Cookie") if "myna_session=" in value)
    assert cookie.startswith("__Host-myna_session=")
    assert "Secure" in cookie
    assert "Domain" not in cookie
    services(https_app).engine.dispose()


def test_without_prompt_none_the_phone_is_always_asked(
    browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    log_in_on(browser, app, rp, clock, phone)
    page = browser.get("/authorize", query_string=new_login(rp).params)
    assert page.status_code == 200
    assert flow.transaction_id(page)  # the login page, waiting for the phone


# --- prompt=none answered from the session ------------------------------------------------------


def test_prompt_none_mints_a_code_for_the_sessions_login(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    clock.advance(-timedelta(minutes=5))  # the login was 5 minutes ago; ID tokens are checked against the wall clock
    log_in_on(browser, app, rp, clock, phone)
    clock.advance(timedelta(minutes=5))
    assert "code" in redirect_params(silently(browser, rp)[1])  # the session serves more than once
    login, response = silently(browser, rp)
    params = redirect_params(response)
    assert params["state"] == login.state
    assert params["iss"] == ISSUER
    assert "error" not in params
    tokens = redeem(rp_http, rp, params["code"], login.verifier).get_json()
    claims = verify_id_token(browser, tokens["id_token"])
    assert claims["nonce"] == login.params["nonce"]
    assert claims["auth_time"] == int((clock.now() - timedelta(minutes=5)).timestamp())
    assert claims["acr"] == flow.ACR_VALUES[0]
    assert claims["amr"] == ["hwk", "user"]


def test_prompt_none_codes_share_the_interactive_logins_sid(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    login = new_login(rp)
    code = log_in(browser, app, login, approved(clock, device=phone.device_id))
    interactive = verify_id_token(browser, redeem(rp_http, rp, code, login.verifier).get_json()["id_token"])
    silent_login, response = silently(browser, rp)
    tokens = redeem(rp_http, rp, redirect_params(response)["code"], silent_login.verifier).get_json()
    silent = verify_id_token(browser, tokens["id_token"])
    for name in ("sub", "auth_time", "acr", "amr", "sid"):
        assert silent[name] == interactive[name], name


def test_prompt_none_releases_attributes_the_person_consented_to(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    log_in_on(browser, app, rp, clock, phone, scope="openid name birthdate")
    login, response = silently(browser, rp, scope="openid name")
    tokens = redeem(rp_http, rp, redirect_params(response)["code"], login.verifier).get_json()
    info = userinfo(rp_http, tokens["access_token"]).get_json()
    assert info["name"] == TARO.name
    assert "birthdate" not in info
    evidence = info["verified_claims"]["verification"]["evidence"][0]
    assert evidence["serial_number"] == format(phone.sign.serial_number, "X")


# --- prompt=none refused -------------------------------------------------------------------------


def test_prompt_none_without_a_session_is_login_required(browser: FlaskClient, rp: Rp) -> None:
    login, response = silently(browser, rp)
    assert_error_redirect(response, "login_required", login)


def test_prompt_none_with_an_unknown_session_cookie_is_login_required(browser: FlaskClient, rp: Rp) -> None:
    browser.set_cookie(SESSION_COOKIE, secrets.token_urlsafe(32))
    login, response = silently(browser, rp)
    assert_error_redirect(response, "login_required", login)


def test_prompt_none_past_max_age_is_login_required(
    browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    log_in_on(browser, app, rp, clock, phone)
    clock.advance(timedelta(seconds=61))
    login, response = silently(browser, rp, max_age="60")
    assert_error_redirect(response, "login_required", login)


def test_prompt_none_within_max_age_is_served(
    browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    log_in_on(browser, app, rp, clock, phone)
    clock.advance(timedelta(seconds=60))
    _login, response = silently(browser, rp, max_age="60")
    assert "code" in redirect_params(response)


def test_max_age_zero_never_uses_the_session(
    browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    log_in_on(browser, app, rp, clock, phone)
    login, response = silently(browser, rp, max_age="0")
    assert_error_redirect(response, "login_required", login)


def test_prompt_none_with_prompt_login_is_invalid_request(browser: FlaskClient, rp: Rp) -> None:
    login = new_login(rp, prompt="none login")
    assert_error_redirect(browser.get("/authorize", query_string=login.params), "invalid_request", login)


def test_prompt_none_for_attributes_not_consented_is_consent_required(
    browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    log_in_on(browser, app, rp, clock, phone, scope="openid name")
    login, response = silently(browser, rp, scope="openid name address")
    assert_error_redirect(response, "consent_required", login)


def test_prompt_none_after_consent_withdrawn_is_consent_required(
    browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    log_in_on(browser, app, rp, clock, phone, scope="openid name")
    services(app).oidc.consents.revoke(person_id=PERSON, client_id=rp.client_id, now=clock.now())
    login, response = silently(browser, rp, scope="openid name")
    assert_error_redirect(response, "consent_required", login)


def test_prompt_none_for_another_client_without_consent_is_consent_required(
    browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    log_in_on(browser, app, rp, clock, phone, scope="openid name")
    other = flow.register(app, clock, name="Other Shop")
    login, response = silently(browser, other, scope="openid name")
    assert_error_redirect(response, "consent_required", login)


def assert_session_ended(response: TestResponse, login: Login) -> None:
    assert_error_redirect(response, "login_required", login)
    assert any(value.startswith(SESSION_COOKIE + "=;") for value in response.headers.getlist("Set-Cookie"))


def test_revoked_phone_ends_the_session(
    browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    log_in_on(browser, app, rp, clock, phone)
    cookie = browser.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    with services(app).sessions.begin() as session:
        record = session.get(DeviceRecord, phone.device_id)
        record.status, record.revoked_at = DeviceStatus.REVOKED.value, clock.now()
    login, response = silently(browser, rp)
    assert_session_ended(response, login)
    with services(app).sessions.begin() as session:  # even were the phone to stand again, the session is gone
        record = session.get(DeviceRecord, phone.device_id)
        record.status, record.revoked_at = DeviceStatus.ACTIVE.value, None
    browser.set_cookie(SESSION_COOKIE, cookie.value)
    login, response = silently(browser, rp)
    assert_error_redirect(response, "login_required", login)


@pytest.mark.parametrize("which", ["auth", "sign"])
def test_revoked_certificate_ends_the_session(
    *, browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone, which: str,
) -> None:
    log_in_on(browser, app, rp, clock, phone)
    certificate = phone.auth if which == "auth" else phone.sign
    services(app).pki.revoke(certificate.serial_number, x509.ReasonFlags.key_compromise)
    login, response = silently(browser, rp)
    assert_session_ended(response, login)


@pytest.mark.parametrize("login_settings", [LoginSettings(session_idle_ttl=timedelta(hours=2))])
def test_expired_certificate_ends_the_session(browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock) -> None:
    phone = enroll_phone(app, clock, card_lifetime=timedelta(hours=1))
    log_in_on(browser, app, rp, clock, phone)
    clock.advance(timedelta(hours=1, seconds=1))
    login, response = silently(browser, rp)
    assert_session_ended(response, login)


def test_session_of_a_phone_without_certificates_on_record_is_ended(
    browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
) -> None:
    log_in(browser, app, new_login(rp), approved(clock))  # the flow's phone: rows, but no certificates issued
    login, response = silently(browser, rp)
    assert_session_ended(response, login)


SHORT = LoginSettings(session_idle_ttl=timedelta(minutes=10), session_lifetime=timedelta(minutes=30))


@pytest.mark.parametrize("login_settings", [SHORT])
def test_idle_session_expires(browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone) -> None:
    log_in_on(browser, app, rp, clock, phone)
    clock.advance(timedelta(minutes=10))
    login, response = silently(browser, rp)
    assert_error_redirect(response, "login_required", login)


@pytest.mark.parametrize("login_settings", [SHORT])
def test_session_used_within_its_idle_time_lasts_until_its_lifetime(
    browser: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    log_in_on(browser, app, rp, clock, phone)
    for _ in range(3):  # used every 9 minutes: alive at 9, 18 and 27 minutes
        clock.advance(timedelta(minutes=9))
        assert "code" in redirect_params(silently(browser, rp)[1])
    clock.advance(timedelta(minutes=3))  # 30 minutes after the login
    login, response = silently(browser, rp)
    assert_error_redirect(response, "login_required", login)
