"""The ceremony steps count themselves: a login page shown and an enrollment begun each bump their counter."""

import secrets

from authlib.oauth2.rfc7636 import create_s256_code_challenge

from idp.oidc.clients import ClientRegistry
from idp.ops import metrics

REDIRECT_URI = "https://shop.example/cb"


def started(kind):
    return metrics.REGISTRY.get_sample_value("myna_ceremonies_started_total", {"kind": kind}) or 0.0


def test_a_login_page_shown_counts_a_login_started(make_app, now):
    app = make_app()
    sessions = app.extensions["myna"].sessions
    client = ClientRegistry(sessions).register(
        name="Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic", scopes=["openid"], now=now,
    ).client
    before = started("login")
    page = app.test_client().get("/authorize", query_string={
        "response_type": "code", "client_id": client.client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
        "state": "s1", "nonce": "n1", "code_challenge": create_s256_code_challenge(secrets.token_urlsafe(48)),
        "code_challenge_method": "S256",
    })
    assert page.status_code == 200, page.text
    assert started("login") == before + 1


def test_a_refused_authorization_request_starts_no_login(make_app):
    before = started("login")
    response = make_app().test_client().get("/authorize", query_string={"client_id": "nobody"})
    assert response.status_code == 400
    assert started("login") == before


def test_an_enrollment_begun_counts_an_enrollment_started(make_app):
    before = started("enrollment")
    response = make_app().test_client().post("/device/v1/enrollments")
    assert response.status_code == 201, response.text
    assert started("enrollment") == before + 1
