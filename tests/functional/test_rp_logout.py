"""RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) ends the portal session.

The RP sends the browser to ``end_session_endpoint`` with an ``id_token_hint`` the portal issued
to it, optionally a registered ``post_logout_redirect_uri`` and ``state``. A good request ends the
session (the next ``prompt=none`` is login_required) and returns the browser with ``state``; a
request with an unregistered redirect URI or a hint the portal did not sign is shown on a page,
never redirected, and leaves the session alone. Embedded and on PostgreSQL + Redis, no mocks.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
import test_oidc_flow as flow
import test_sso_session as sso
from joserfc import jwt
from joserfc.jwk import ECKey
from test_oidc_flow import ISSUER, REDIRECT_URI, Rp, approved, assert_error_page, log_in, new_login, redeem, register
from test_sso_session import Phone, silently
from werkzeug.serving import make_server

from idp.app import services
from relying_party_demo.app import RpConfig
from relying_party_demo.app import create_app as create_rp_app

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from idp.clock import FixedClock

# The code flow's fixtures: one portal per test, embedded and on PostgreSQL + Redis.
app, backend, browser, clock, login_settings, rp_http, phone = (
    flow.app, flow.backend, flow.browser, flow.clock, flow.login_settings, flow.rp_http, sso.phone,
)

LOGGED_OUT = "https://rp.example/logged-out"


@pytest.fixture
def rp(app: Flask, clock: FixedClock) -> Rp:
    return register(app, clock, post_logout_redirect_uris=[LOGGED_OUT])


def logged_in(*, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock,
              phone: Phone) -> str:
    """Log in on ``phone``; the ID token the RP got."""
    login = new_login(rp)
    code = log_in(browser, app, login, approved(clock, device=phone.device_id))
    id_token: str = redeem(rp_http, rp, code, login.verifier).get_json()["id_token"]
    return id_token


def still_logged_in(browser: FlaskClient, rp: Rp) -> bool:
    return "code" in flow.redirect_params(silently(browser, rp)[1])


def logout(browser: FlaskClient, method: str = "GET", **params: str) -> TestResponse:
    if method == "POST":
        return browser.post("/logout", data=params)
    return browser.get("/logout", query_string=params)


def test_discovery_names_the_end_session_endpoint(browser: FlaskClient) -> None:
    metadata = browser.get("/.well-known/openid-configuration").get_json()
    assert metadata["end_session_endpoint"] == ISSUER + "/logout"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_logout_ends_the_session_and_returns_with_state(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone, method: str,
) -> None:
    id_token = logged_in(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone)
    response = logout(browser, method, id_token_hint=id_token, post_logout_redirect_uri=LOGGED_OUT, state="s-1",
                      client_id=rp.client_id)
    assert response.status_code == 303
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == LOGGED_OUT
    assert parse_qs(location.query) == {"state": ["s-1"]}
    assert any(value.startswith(sso.SESSION_COOKIE + "=;") for value in response.headers.getlist("Set-Cookie"))
    login, silent = silently(browser, rp)
    flow.assert_error_redirect(silent, "login_required", login)


def test_logout_without_a_redirect_uri_shows_the_logged_out_page(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    id_token = logged_in(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone)
    response = logout(browser, id_token_hint=id_token, state="s-1")
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert 'id="title"' in response.text
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert any(value.startswith(sso.SESSION_COOKIE + "=;") for value in response.headers.getlist("Set-Cookie"))
    login, silent = silently(browser, rp)
    flow.assert_error_redirect(silent, "login_required", login)


def test_expired_id_token_hint_still_logs_out(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    id_token = logged_in(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone)
    clock.advance(services(app).settings.oidc.id_token_lifetime * 2)
    response = logout(browser, id_token_hint=id_token, post_logout_redirect_uri=LOGGED_OUT)
    assert response.status_code == 303
    assert not response.headers["Location"].count("state=")


def test_hint_of_another_person_does_not_end_this_browsers_session(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    flow.enroll_device(app, clock, "someone-elses-phone", person="person-2")
    other_browser = app.test_client()
    login = new_login(rp)
    code = log_in(other_browser, app, login, approved(clock, person="person-2", device="someone-elses-phone"))
    someone_elses = redeem(rp_http, rp, code, login.verifier).get_json()["id_token"]
    logged_in(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone)
    response = logout(browser, id_token_hint=someone_elses, post_logout_redirect_uri=LOGGED_OUT)
    assert response.status_code == 303
    assert still_logged_in(browser, rp)


# --- refused: shown, never redirected, the session left alone -----------------------------------


def forged(id_token: str) -> str:
    """The same header and claims, signed by a key that is not the portal's (naming the portal's kid)."""
    header, claims = (_unverified_part(id_token, index) for index in (0, 1))
    key = ECKey.generate_key("P-256")
    return jwt.encode({"alg": "ES256", "kid": header["kid"], "typ": "JWT"}, claims, key)


def _unverified_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def assert_refused(response: TestResponse) -> None:
    assert_error_page(response, "invalid_request")


def test_unregistered_post_logout_redirect_uri_is_shown_not_redirected(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    id_token = logged_in(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone)
    assert_refused(logout(browser, id_token_hint=id_token, post_logout_redirect_uri="https://evil.example/", state="s"))
    assert still_logged_in(browser, rp)


def test_redirect_uri_registered_for_login_only_is_shown_not_redirected(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    id_token = logged_in(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone)
    assert_refused(logout(browser, id_token_hint=id_token, post_logout_redirect_uri=REDIRECT_URI))
    assert still_logged_in(browser, rp)


def test_another_clients_post_logout_redirect_uri_is_shown_not_redirected(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    id_token = logged_in(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone)
    register(app, clock, name="Other", post_logout_redirect_uris=["https://rp.example/other-bye"])
    assert_refused(logout(browser, id_token_hint=id_token, post_logout_redirect_uri="https://rp.example/other-bye"))
    assert still_logged_in(browser, rp)


def test_forged_id_token_hint_is_shown_not_redirected(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    id_token = logged_in(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone)
    assert_refused(logout(browser, id_token_hint=forged(id_token), post_logout_redirect_uri=LOGGED_OUT))
    assert still_logged_in(browser, rp)


@pytest.mark.parametrize("hint", ["", "not-a-jwt", "a.b.c"], ids=["missing", "garbage", "three_garbage_parts"])
def test_missing_or_malformed_hint_is_shown_not_redirected(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone, hint: str,
) -> None:
    logged_in(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone)
    assert_refused(logout(browser, id_token_hint=hint, post_logout_redirect_uri=LOGGED_OUT))
    assert still_logged_in(browser, rp)


def test_hint_of_a_removed_client_is_shown_not_redirected(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, clock: FixedClock, phone: Phone,
) -> None:
    gone = register(app, clock, name="Gone", post_logout_redirect_uris=[LOGGED_OUT])
    id_token = logged_in(browser=browser, rp_http=rp_http, app=app, rp=gone, clock=clock, phone=phone)
    assert services(app).oidc.clients.remove(gone.client_id)
    assert_refused(logout(browser, id_token_hint=id_token, post_logout_redirect_uri=LOGGED_OUT))


def test_client_id_other_than_the_hints_audience_is_shown_not_redirected(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    id_token = logged_in(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone)
    other = register(app, clock, name="Other", post_logout_redirect_uris=[LOGGED_OUT])
    assert_refused(logout(browser, id_token_hint=id_token, client_id=other.client_id,
                          post_logout_redirect_uri=LOGGED_OUT))
    assert still_logged_in(browser, rp)


def test_hint_from_another_issuer_is_shown_not_redirected(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> None:
    """Signed with the portal's own key, but naming another issuer: not an ID token of ours."""
    logged_in(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone)
    key = services(app).oidc.keys.signing_key("ES256")
    now = int(time.time())
    claims = {"iss": "https://elsewhere.example", "sub": "x", "aud": rp.client_id, "iat": now, "exp": now + 60}
    hint = jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key.key)
    assert_refused(logout(browser, id_token_hint=hint, post_logout_redirect_uri=LOGGED_OUT))
    assert still_logged_in(browser, rp)


# --- the demo relying party logs out through the endpoint ---------------------------------------


def test_demo_rp_logs_out_through_the_end_session_endpoint(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, clock: FixedClock, phone: Phone,
) -> None:
    """The demo RP's log-out button ends the portal session and comes back to the RP, state checked."""
    shop = register(app, clock, post_logout_redirect_uris=["http://127.0.0.1:8080/logged-out"])
    id_token = logged_in(browser=browser, rp_http=rp_http, app=app, rp=shop, clock=clock, phone=phone)
    server = make_server("127.0.0.1", 0, app, threaded=True)  # the RP discovers the portal over HTTP
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        rp_app = create_rp_app(RpConfig(
            issuer=f"http://127.0.0.1:{server.server_port}", client_id=shop.client_id, client_secret=str(shop.secret),
            post_logout_redirect_uri="http://127.0.0.1:8080/logged-out",
        ))
        site = rp_app.test_client()
        with site.session_transaction() as rp_session:
            rp_session["user"], rp_session["id_token"] = {"id_token": {}, "userinfo": {}}, id_token
        to_portal = site.post("/logout")
    finally:
        server.shutdown()
        thread.join()
    assert to_portal.status_code == 303
    portal_url = urlsplit(to_portal.headers["Location"])
    assert portal_url.path == "/logout"
    back = browser.get(portal_url.path, query_string=portal_url.query)
    assert back.status_code == 303
    back_url = urlsplit(back.headers["Location"])
    assert f"{back_url.scheme}://{back_url.netloc}{back_url.path}" == "http://127.0.0.1:8080/logged-out"
    home = site.get(back_url.path, query_string=back_url.query)
    assert home.headers["Location"].endswith("/?logged_out=1")
    login, silent = silently(browser, shop)
    flow.assert_error_redirect(silent, "login_required", login)
