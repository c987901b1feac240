"""The refresh-token grant answers with a new ID token for the same login (OIDC Core §12.2).

The RP logs in once, then refreshes later: the new ID token verifies with the portal's JWKS and
names the same person, client and login (sub, aud, auth_time, acr, amr, sid) with a new iat and
exp and no nonce; its at_hash is that of the new access token.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import test_oidc_flow as flow
from authlib.oidc.core.grants.util import create_half_hash
from test_oidc_flow import TARO, approved, log_in, new_login, redeem, register, verify_id_token

from idp.app import services

if TYPE_CHECKING:
    from cryptography import x509
    from flask import Flask
    from flask.testing import FlaskClient
    from test_oidc_flow import Rp
    from werkzeug.test import TestResponse

    from idp.clock import FixedClock

# The code flow's fixtures: one portal per test, embedded and on PostgreSQL + Redis.
app, backend, browser, clock, login_settings, rp, rp_http, signature_certificate = (
    flow.app, flow.backend, flow.browser, flow.clock, flow.login_settings, flow.rp, flow.rp_http,
    flow.signature_certificate,
)

SAME_LOGIN = ("iss", "sub", "aud", "auth_time", "acr", "amr", "sid")


def refresh(rp_http: FlaskClient, rp: Rp, refresh_token: str) -> TestResponse:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return rp_http.post("/token", data=form, headers=rp.auth())


def first_tokens(browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
                 **overrides: Any) -> dict[str, Any]:
    login = new_login(rp, **overrides.pop("params", {}))
    response = redeem(rp_http, rp, log_in(browser, app, login, approved(clock, **overrides)), login.verifier)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.get_json()
    return tokens


def test_refresh_issues_a_new_id_token_for_the_same_login(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
) -> None:
    clock.advance(-timedelta(minutes=7))  # the login was 7 minutes ago; ID tokens are checked against the wall clock
    first = first_tokens(browser, rp_http, app, rp, clock)
    original = verify_id_token(browser, first["id_token"])
    clock.advance(timedelta(minutes=7))

    response = refresh(rp_http, rp, first["refresh_token"])
    assert response.status_code == 200, response.text
    tokens = response.get_json()
    renewed = verify_id_token(browser, tokens["id_token"])

    assert {name: renewed[name] for name in SAME_LOGIN} == {name: original[name] for name in SAME_LOGIN}
    assert renewed["aud"] == rp.client_id
    assert renewed["auth_time"] == original["auth_time"]
    assert renewed["iat"] == original["iat"] + 7 * 60
    assert renewed["exp"] == renewed["iat"] + 600
    assert "nonce" in original
    assert "nonce" not in renewed
    assert renewed["at_hash"] == create_half_hash(tokens["access_token"], "ES256").decode()
    assert renewed["header"]["kid"] == original["header"]["kid"]


def test_every_refresh_in_a_chain_repeats_the_login(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
) -> None:
    clock.advance(-timedelta(minutes=3))
    first = first_tokens(browser, rp_http, app, rp, clock)
    original = verify_id_token(browser, first["id_token"])
    token = first["refresh_token"]
    for _ in range(3):
        clock.advance(timedelta(minutes=1))
        tokens = refresh(rp_http, rp, token).get_json()
        token = tokens["refresh_token"]
        renewed = verify_id_token(browser, tokens["id_token"])
        assert {name: renewed[name] for name in SAME_LOGIN} == {name: original[name] for name in SAME_LOGIN}


def test_rs256_client_gets_an_rs256_id_token_on_refresh(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, clock: FixedClock,
) -> None:
    client = register(app, clock, id_token_alg="RS256")
    first = first_tokens(browser, rp_http, app, client, clock)
    tokens = refresh(rp_http, client, first["refresh_token"]).get_json()
    renewed = verify_id_token(browser, tokens["id_token"])
    assert renewed["header"]["alg"] == "RS256"
    assert renewed["at_hash"] == create_half_hash(tokens["access_token"], "RS256").decode()


def test_id_token_attributes_are_repeated_only_while_the_consent_stands(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
    signature_certificate: x509.Certificate,
) -> None:
    first = first_tokens(
        browser, rp_http, app, rp, clock, params={"claims": '{"id_token": {"name": null}}'},
        consented=("name",), serial=signature_certificate.serial_number,
    )
    assert verify_id_token(browser, first["id_token"])["name"] == TARO.name
    second = refresh(rp_http, rp, first["refresh_token"]).get_json()
    assert verify_id_token(browser, second["id_token"])["name"] == TARO.name

    services(app).oidc.consents.revoke(person_id="person-1", client_id=rp.client_id, now=clock.now())
    third = refresh(rp_http, rp, second["refresh_token"]).get_json()
    renewed = verify_id_token(browser, third["id_token"])
    assert "name" not in renewed
    assert "verified_claims" not in renewed


def test_refused_refresh_carries_no_id_token(
    browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
) -> None:
    first = first_tokens(browser, rp_http, app, rp, clock)
    assert refresh(rp_http, rp, first["refresh_token"]).status_code == 200
    reused = refresh(rp_http, rp, first["refresh_token"])
    assert reused.status_code == 400
    assert reused.get_json() == {"error": "invalid_grant"}
