"""An essential acr the portal cannot reach fails the authorization request (OIDC Core §5.5.1.1).

Every login is a signature by the phone's SE, so the portal reaches one authentication context
class, ``ACR_SMARTPHONE_SE``. An RP that makes another class essential gets
``unmet_authentication_requirements`` (OpenID Connect Core Error Code 1.0) at its redirect URI,
with ``state`` and ``iss``, before anyone is asked to log in; at PAR the same error is JSON. A
non-essential acr request, like ``acr_values``, is a hint and the login goes on.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
import test_oidc_flow as flow
from test_oidc_flow import approved, assert_error_redirect, log_in, new_login, push, redeem, verify_id_token

from idp.ceremonies.transactions import ACR_SMARTPHONE_SE

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient
    from test_oidc_flow import Rp

    from idp.clock import FixedClock

# The code flow's fixtures: one portal per test, embedded and on PostgreSQL + Redis.
app, backend, browser, clock, login_settings, rp, rp_http = (
    flow.app, flow.backend, flow.browser, flow.clock, flow.login_settings, flow.rp, flow.rp_http,
)

UNMET = "unmet_authentication_requirements"
OTHER_ACR = "urn:example:acr:password"


def claims_asking_acr(**acr: Any) -> str:
    return json.dumps({"id_token": {"acr": acr}})


@pytest.mark.parametrize("acr", [
    pytest.param({"essential": True, "value": OTHER_ACR}, id="essential_value"),
    pytest.param({"essential": True, "values": [OTHER_ACR, "urn:example:acr:otp"]}, id="essential_values"),
    pytest.param({"essential": True, "value": OTHER_ACR, "values": [ACR_SMARTPHONE_SE]},
                 id="value_and_values_disagree"),
])
def test_unreachable_essential_acr_is_redirected_as_unmet_authentication_requirements(
    browser: FlaskClient, rp: Rp, acr: dict[str, Any],
) -> None:
    login = new_login(rp, claims=claims_asking_acr(**acr))
    params = assert_error_redirect(browser.get("/authorize", query_string=login.params), UNMET, login)
    assert "code" not in params


def test_unreachable_essential_acr_with_prompt_none_is_still_unmet(browser: FlaskClient, rp: Rp) -> None:
    login = new_login(rp, prompt="none", claims=claims_asking_acr(essential=True, value=OTHER_ACR))
    assert_error_redirect(browser.get("/authorize", query_string=login.params), UNMET, login)


def test_unreachable_essential_acr_is_refused_at_par(rp_http: FlaskClient, rp: Rp) -> None:
    response = push(rp_http, rp, new_login(rp, claims=claims_asking_acr(essential=True, values=[OTHER_ACR])))
    assert response.status_code == 400
    assert response.get_json()["error"] == UNMET


@pytest.mark.parametrize("acr", [
    pytest.param({"essential": "yes", "value": OTHER_ACR}, id="essential_not_boolean"),
    pytest.param({"essential": True, "value": ["a"]}, id="value_not_a_string"),
    pytest.param({"essential": True, "values": ACR_SMARTPHONE_SE}, id="values_not_an_array"),
    pytest.param({"essential": True, "values": []}, id="values_empty"),
    pytest.param({"essential": True, "values": [1]}, id="values_not_strings"),
])
def test_malformed_acr_request_is_invalid_request(browser: FlaskClient, rp: Rp, acr: dict[str, Any]) -> None:
    login = new_login(rp, claims=claims_asking_acr(**acr))
    assert_error_redirect(browser.get("/authorize", query_string=login.params), "invalid_request", login)


@pytest.mark.parametrize("overrides", [
    pytest.param({"claims": claims_asking_acr(essential=True, value=ACR_SMARTPHONE_SE)}, id="essential_reachable"),
    pytest.param({"claims": claims_asking_acr(essential=True, values=[OTHER_ACR, ACR_SMARTPHONE_SE])},
                 id="essential_values_include_reachable"),
    pytest.param({"claims": claims_asking_acr(value=OTHER_ACR)}, id="voluntary_unreachable_value"),
    pytest.param({"claims": claims_asking_acr(essential=False, values=[OTHER_ACR])}, id="explicitly_not_essential"),
    pytest.param({"claims": json.dumps({"id_token": {"acr": None}})}, id="acr_null"),
    pytest.param({"acr_values": OTHER_ACR}, id="acr_values_hint"),
])
def test_reachable_or_voluntary_acr_logs_in_with_the_se_acr(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, overrides: dict[str, str],
) -> None:
    login = new_login(rp, **overrides)
    response = redeem(rp_http, rp, log_in(browser, app, login, approved(clock)), login.verifier)
    assert response.status_code == 200, response.text
    assert verify_id_token(browser, response.get_json()["id_token"])["acr"] == ACR_SMARTPHONE_SE
