"""The account page: the sites a person consented to, and withdrawing a consent (CSRF-protected).

It needs the portal session a completed login leaves; without one it starts nothing and says how
to log in. Withdrawing a consent stops the release of attributes at the client's next userinfo
call. Embedded and on PostgreSQL + Redis, no mocks.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
import test_oidc_flow as flow
import test_sso_session as sso
from test_oidc_flow import PERSON, TARO, Rp, approved, log_in, new_login, redeem, register, userinfo
from test_sso_session import Phone

from idp.app import services

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from idp.clock import FixedClock

# The code flow's fixtures: one portal per test, embedded and on PostgreSQL + Redis.
app, backend, browser, clock, login_settings, rp, rp_http, phone = (
    flow.app, flow.backend, flow.browser, flow.clock, flow.login_settings, flow.rp, flow.rp_http, sso.phone,
)


def consent_on(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone, scope: str,
) -> str:
    """Log in at ``rp`` approving ``scope``'s attributes on the phone; the RP's access token."""
    login = new_login(rp, scope=scope)
    consented = tuple(name for name in scope.split() if name != "openid")
    code = log_in(browser, app, login, approved(
        clock, device=phone.device_id, consented=consented, serial=phone.sign.serial_number,
    ))
    access_token: str = redeem(rp_http, rp, code, login.verifier).get_json()["access_token"]
    return access_token


def csrf_token(page: TestResponse) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def assert_page(response: TestResponse, status: int = 200) -> None:
    assert response.status_code == status
    assert response.mimetype == "text/html"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "<script" not in response.text
    assert response.headers["Cache-Control"] == "no-store"


def test_without_a_session_the_page_says_how_to_log_in_and_starts_nothing(browser: FlaskClient) -> None:
    response = browser.get("/account", headers={"Accept-Language": "en"})
    assert_page(response)
    assert "Log in with My Number at a website" in response.text
    assert "Set-Cookie" not in response.headers
    assert "<form" not in response.text


def test_page_lists_the_consented_clients_and_attributes(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    other = register(app, clock, name="Book Store")
    consent_on(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone,
               scope="openid name birthdate")
    consent_on(browser=browser, rp_http=rp_http, app=app, rp=other, clock=clock, phone=phone, scope="openid address")
    page = browser.get("/account", headers={"Accept-Language": "en"})
    assert_page(page)
    entries = dict(re.findall(r'data-client-id="([^"]+)">\s*<strong class="client-name">([^<]+)</strong>', page.text))
    assert entries == {rp.client_id: "Example Shop", other.client_id: "Book Store"}
    shop = page.text.split(f'data-client-id="{rp.client_id}"')[1].split("</li>")[0]
    assert re.findall(r'data-attribute="([a-z]+)"', shop) == ["name", "birthdate"]
    assert TARO.name not in page.text  # the page names attributes, never their values


def test_page_follows_the_browsers_language(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    consent_on(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone, scope="openid name")
    assert "同意を取り消す" in browser.get("/account", headers={"Accept-Language": "ja"}).text
    assert "Withdraw consent" in browser.get("/account", headers={"Accept-Language": "en"}).text


def test_withdrawn_consent_stops_userinfo_releasing_attributes(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    token = consent_on(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone, scope="openid name")
    assert userinfo(rp_http, token).get_json()["name"] == TARO.name
    page = browser.get("/account")
    response = browser.post("/account/consents/withdraw",
                            data={"client_id": rp.client_id, "csrf_token": csrf_token(page)})
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/account?withdrawn=1")
    assert set(userinfo(rp_http, token).get_json()) == {"sub"}
    assert services(app).oidc.consents.granted(person_id=PERSON, client_id=rp.client_id) == frozenset()
    after = browser.get(response.headers["Location"], headers={"Accept-Language": "en"})
    assert 'id="withdrawn"' in after.text
    assert rp.client_id not in after.text


@pytest.mark.parametrize("token", [None, "", "wrong"], ids=["missing", "empty", "wrong"])
def test_withdraw_without_the_sessions_csrf_token_is_refused(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
    token: str | None,
) -> None:
    consent_on(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone, scope="openid name")
    form = {"client_id": rp.client_id} | ({} if token is None else {"csrf_token": token})
    response = browser.post("/account/consents/withdraw", data=form)
    assert_page(response, 403)
    assert services(app).oidc.consents.granted(person_id=PERSON, client_id=rp.client_id) == {"name"}


def test_another_sessions_csrf_token_is_refused(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    consent_on(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone, scope="openid name")
    stale = csrf_token(browser.get("/account"))
    consent_on(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone, scope="openid name")
    response = browser.post("/account/consents/withdraw", data={"client_id": rp.client_id, "csrf_token": stale})
    assert_page(response, 403)
    assert services(app).oidc.consents.granted(person_id=PERSON, client_id=rp.client_id) == {"name"}


def test_withdraw_without_a_session_is_refused(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    consent_on(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone, scope="openid name")
    token = csrf_token(browser.get("/account"))
    stranger = app.test_client()
    response = stranger.post("/account/consents/withdraw", data={"client_id": rp.client_id, "csrf_token": token})
    assert_page(response, 403)
    assert services(app).oidc.consents.granted(person_id=PERSON, client_id=rp.client_id) == {"name"}


def test_withdraw_touches_only_the_sessions_person(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    services(app).oidc.consents.record(person_id="person-2", client_id=rp.client_id, attributes=("name",),
                                       now=clock.now())
    consent_on(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone, scope="openid name")
    token = csrf_token(browser.get("/account"))
    browser.post("/account/consents/withdraw", data={"client_id": rp.client_id, "csrf_token": token})
    assert services(app).oidc.consents.granted(person_id="person-2", client_id=rp.client_id) == {"name"}
