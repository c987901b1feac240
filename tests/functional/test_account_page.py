"""The account page: the person's phones and the sites they consented to; withdrawing a consent,
suspending or revoking the phone (CSRF-protected).

It needs the portal session a completed login leaves; without one it starts nothing and says how
to log in. Withdrawing a consent stops the release of attributes at the client's next userinfo
call. Suspending the phone puts both of its certificates on hold, revoking it revokes them and the
device; either ends the session, and the phone's next login is refused. Embedded and on
PostgreSQL + Redis, no mocks; the logins of a real simulated phone run over real HTTP.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import requests
import test_oidc_flow as flow
import test_sso_session as sso
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from enrollment_portal import AUTH_PIN, SIGN_PIN, Portal, World, running_portal
from sqlalchemy import select
from test_oidc_flow import PERSON, TARO, Rp, approved, log_in, new_login, redeem, register, userinfo
from test_sso_session import Phone

from idp.app import services
from idp.audit import AuditLog
from idp.ceremonies.phone_life import PhoneLife
from idp.ceremonies.records import DeviceRecord, DeviceStatus
from idp.pki.records import IssuedCertificate
from idp.pki.registry import CertificateState
from smartphone.portal_client import Enrollment, PortalClient, PortalError, approve, enroll

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from flask import Flask
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from idp.clock import FixedClock
    from smartphone import SecureElement

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


# --- the person's phone: listed, suspended, revoked ----------------------------------------------

EN = {"Accept-Language": "en"}


def listed_phones(page: TestResponse) -> dict[str, tuple[str, list[tuple[str, str, str | None]]]]:
    """Each listed phone: its state and its certificates' (purpose, status, reason), in page order."""
    phones = {}
    for chunk in page.text.split('<li class="phone" ')[1:]:
        found = re.match(r'data-device-id="([^"]+)" data-state="([a-z]+)"', chunk)
        assert found is not None, chunk
        certificates = re.findall(
            r'data-purpose="([a-z]+)" data-status="([a-z_]+)"(?: data-reason="([A-Za-z]+)")?', chunk.split("</ul>")[0],
        )
        phones[found.group(1)] = (found.group(2), [(purpose, status, reason or None)
                                                   for purpose, status, reason in certificates])
    return phones


def statuses(app: Flask, phone: Phone) -> list[tuple[CertificateState, x509.ReasonFlags | None]]:
    """The registry's state and reason of the phone's two certificates (auth, sign)."""
    found = [services(app).pki.status(certificate.serial_number) for certificate in (phone.auth, phone.sign)]
    return [(status.state, status.reason) for status in found if status is not None]


GOOD = [(CertificateState.GOOD, None), (CertificateState.GOOD, None)]


def ocsp_says(browser: FlaskClient, app: Flask, certificate: x509.Certificate) -> tuple[object, object]:
    """What the portal's OCSP responder says of ``certificate``: (status, revocation reason)."""
    issuer = services(app).pki.authority.certificate
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA256()).build()
    response = browser.post("/pki/ocsp", data=request.public_bytes(serialization.Encoding.DER),
                            headers={"Content-Type": "application/ocsp-request"})
    answer = ocsp.load_der_ocsp_response(response.data)
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    return answer.certificate_status, answer.revocation_reason


def session_cleared(response: TestResponse) -> bool:
    return any(cookie.startswith(f"{sso.SESSION_COOKIE}=;") and "Expires=Thu, 01 Jan 1970" in cookie
               for cookie in response.headers.getlist("Set-Cookie"))


def retire(app: Flask, clock: FixedClock, phone: Phone, reason: x509.ReasonFlags) -> None:
    """Mark ``phone`` revoked a day after it was enrolled, as enrolling a newer phone does."""
    pki = services(app).pki
    for certificate in (phone.auth, phone.sign):
        pki.revoke(certificate.serial_number, reason)
    with services(app).sessions.begin() as session:
        device = session.get(DeviceRecord, phone.device_id)
        assert device is not None
        device.status, device.revoked_at = DeviceStatus.REVOKED.value, clock.now()
        device.created_at = clock.now() - timedelta(days=400)


@pytest.fixture
def signed_in(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
) -> str:
    """A portal session made by ``phone`` in ``browser``; an access token the RP got from that login."""
    return consent_on(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone, scope="openid name")


def test_page_lists_the_phones_and_their_certificates_without_serials(
    *, browser: FlaskClient, app: Flask, clock: FixedClock, phone: Phone, signed_in: str,
) -> None:
    old = sso.enroll_phone(app, clock)
    retire(app, clock, old, x509.ReasonFlags.superseded)
    page = browser.get("/account", headers=EN)
    assert_page(page)
    assert listed_phones(page) == {
        phone.device_id: ("active", [("auth", "good", None), ("sign", "good", None)]),
        old.device_id: ("revoked", [("auth", "revoked", "superseded"), ("sign", "revoked", "superseded")]),
    }
    assert list(listed_phones(page)) == [phone.device_id, old.device_id]  # newest first
    assert "Revoked (replaced by a new certificate)" in page.text
    current = page.text.split(f'data-device-id="{phone.device_id}"')[1].split('<li class="phone"')[0]
    assert "the phone you logged in with" in current
    assert phone.auth.not_valid_after_utc.strftime("%Y-%m-%d") in current
    assert phone.auth.not_valid_before_utc.strftime("%Y-%m-%d") in current
    assert 'id="suspend-phone"' in current
    assert 'id="revoke-phone"' in current
    assert page.text.count('id="suspend-phone"') == 1  # only the session's phone has the buttons
    for certificate in (phone.auth, phone.sign, old.auth, old.sign):
        assert str(certificate.serial_number) not in page.text
        assert f"{certificate.serial_number:x}" not in page.text
        assert f"{certificate.serial_number:X}" not in page.text
    assert TARO.name not in page.text


def test_page_lists_a_signature_certificate_revoked_alone_with_its_reason(
    *, browser: FlaskClient, app: Flask, phone: Phone, signed_in: str,
) -> None:
    services(app).pki.revoke(phone.sign.serial_number, x509.ReasonFlags.affiliation_changed)  # the person moved
    page = browser.get("/account", headers={"Accept-Language": "ja"})
    assert_page(page)
    assert listed_phones(page) == {
        phone.device_id: ("active", [("auth", "good", None), ("sign", "revoked", "affiliationChanged")]),
    }
    assert "失効 (記載事項の変更)" in page.text
    assert "このスマートフォンを一時停止する" in page.text


def test_page_lists_a_suspended_phone_with_its_certificates_on_hold(
    *, browser: FlaskClient, app: Flask, clock: FixedClock, phone: Phone, signed_in: str,
) -> None:
    lost = sso.enroll_phone(app, clock)  # another of the person's phones, suspended by its card
    PhoneLife(sessions=services(app).sessions, pki=services(app).pki, clock=clock,
              revoke_grants=services(app).oidc.revoke_device_grants).suspend(lost.device_id, actor="operator")
    page = browser.get("/account", headers=EN)
    assert listed_phones(page)[lost.device_id] == (
        "suspended", [("auth", "on_hold", "certificateHold"), ("sign", "on_hold", "certificateHold")],
    )
    assert listed_phones(page)[phone.device_id][0] == "active"
    assert page.text.count('id="suspend-phone"') == 1  # the session's phone only: no resume here


def test_page_lists_a_phone_whose_authentication_certificate_expired_as_expired(
    *, browser: FlaskClient, app: Flask, clock: FixedClock, phone: Phone, signed_in: str,
) -> None:
    old = sso.enroll_phone(app, clock)  # another of the person's phones, not used for years
    with services(app).sessions.begin() as session:
        row = session.scalars(select(IssuedCertificate).where(
            IssuedCertificate.serial == str(old.auth.serial_number))).one()
        row.not_after = clock.now() - timedelta(days=1)
    page = browser.get("/account", headers=EN)
    assert listed_phones(page)[old.device_id] == ("expired", [("auth", "expired", None), ("sign", "good", None)])
    assert "Expired (enroll it again)" in page.text
    assert listed_phones(page)[phone.device_id][0] == "active"


def test_suspend_asks_first_and_changes_nothing_until_confirmed(
    *, browser: FlaskClient, app: Flask, phone: Phone, signed_in: str,
) -> None:
    confirm = browser.get("/account/phone/suspend", headers=EN)
    assert_page(confirm)
    assert 'action="/account/phone/suspend"' in confirm.text
    assert 'method="post"' in confirm.text
    assert csrf_token(confirm)
    assert statuses(app, phone) == GOOD


def test_suspend_puts_both_certificates_on_hold_and_ends_the_session(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
    signed_in: str,
) -> None:
    token = signed_in
    response = browser.post("/account/phone/suspend", data={"csrf_token": csrf_token(browser.get("/account"))})
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/account/phone/suspended")
    assert response.headers["Cache-Control"] == "no-store"
    assert session_cleared(response)
    hold = (CertificateState.ON_HOLD, x509.ReasonFlags.certificate_hold)
    assert statuses(app, phone) == [hold, hold]
    for certificate in (phone.auth, phone.sign):
        assert ocsp_says(browser, app, certificate) == (ocsp.OCSPCertStatus.REVOKED, x509.ReasonFlags.certificate_hold)
    assert userinfo(rp_http, token).status_code == 401  # the grants issued on the phone are revoked
    login, silent = sso.silently(browser, rp)
    flow.assert_error_redirect(silent, "login_required", login)
    assert "Log in with My Number at a website" in browser.get("/account", headers=EN).text
    done = browser.get(response.headers["Location"], headers=EN)
    assert_page(done)
    assert "Your phone is suspended" in done.text
    assert "tap your My Number Card" in done.text
    held = [entry for entry in AuditLog(services(app).sessions, clock=clock).export()
            if entry.actor == f"person:{PERSON}" and entry.event == "certificate.revoked"]
    assert [(entry.event, entry.subject[0], entry.details) for entry in held] == [
        ("certificate.revoked", f"device:{phone.device_id}", {"reason": "certificateHold"}),
    ]


@pytest.mark.parametrize("reason", [x509.ReasonFlags.cessation_of_operation, x509.ReasonFlags.key_compromise])
def test_revoke_revokes_both_certificates_and_the_phone_and_ends_the_session(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
    signed_in: str, reason: x509.ReasonFlags,
) -> None:
    token = signed_in
    confirm = browser.get("/account/phone/revoke", headers=EN)
    assert_page(confirm)
    assert re.findall(r'name="reason" value="([A-Za-z]+)"', confirm.text) == ["cessationOfOperation", "keyCompromise"]
    response = browser.post("/account/phone/revoke", data={"csrf_token": csrf_token(confirm), "reason": reason.value})
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/account/phone/revoked")
    assert session_cleared(response)
    assert statuses(app, phone) == [(CertificateState.REVOKED, reason), (CertificateState.REVOKED, reason)]
    for certificate in (phone.auth, phone.sign):
        assert ocsp_says(browser, app, certificate) == (ocsp.OCSPCertStatus.REVOKED, reason)
    with services(app).sessions() as session:
        device = session.get(DeviceRecord, phone.device_id)
        assert device is not None
        assert device.status == DeviceStatus.REVOKED.value
    assert userinfo(rp_http, token).status_code == 401
    login, silent = sso.silently(browser, rp)
    flow.assert_error_redirect(silent, "login_required", login)
    done = browser.get(response.headers["Location"], headers=EN)
    assert "Your phone is revoked" in done.text
    assert "enroll a phone" in done.text
    revoked = [entry for entry in AuditLog(services(app).sessions, clock=clock).export()
               if entry.event == "device.revoked"]
    assert [(entry.actor, entry.subject, entry.details) for entry in revoked] == [
        (f"person:{PERSON}", [f"device:{phone.device_id}"], {"reason": reason.value}),
    ]


@pytest.mark.parametrize("reason", [None, "", "superseded", "certificateHold", "nonsense"])
def test_revoke_without_an_offered_reason_is_400_and_changes_nothing(
    *, browser: FlaskClient, app: Flask, phone: Phone, signed_in: str, reason: str | None,
) -> None:
    form = {"csrf_token": csrf_token(browser.get("/account"))} | ({} if reason is None else {"reason": reason})
    response = browser.post("/account/phone/revoke", data=form, headers=EN)
    assert_page(response, 400)
    assert "Choose why you revoke the phone" in response.text
    assert statuses(app, phone) == GOOD
    assert listed_phones(browser.get("/account"))[phone.device_id][0] == "active"  # the session goes on


@pytest.mark.parametrize("action", ["suspend", "revoke"])
@pytest.mark.parametrize("token", [None, "", "wrong"], ids=["missing", "empty", "wrong"])
def test_phone_action_without_the_sessions_csrf_token_is_refused(
    *, browser: FlaskClient, app: Flask, phone: Phone, signed_in: str, action: str, token: str | None,
) -> None:
    form = {"reason": "keyCompromise"} | ({} if token is None else {"csrf_token": token})
    response = browser.post(f"/account/phone/{action}", data=form, headers=EN)
    assert_page(response, 403)
    assert "This form can no longer be used" in response.text
    assert not session_cleared(response)
    assert statuses(app, phone) == GOOD
    assert listed_phones(browser.get("/account"))[phone.device_id][0] == "active"


@pytest.mark.parametrize("action", ["suspend", "revoke"])
def test_phone_action_with_another_sessions_csrf_token_is_refused(
    *, browser: FlaskClient, rp_http: FlaskClient, app: Flask, rp: Rp, clock: FixedClock, phone: Phone,
    signed_in: str, action: str,
) -> None:
    stale = csrf_token(browser.get("/account"))
    logged_in_again = consent_on(browser=browser, rp_http=rp_http, app=app, rp=rp, clock=clock, phone=phone,
                                 scope="openid name")  # a new login: a new session and token
    assert logged_in_again != signed_in
    response = browser.post(f"/account/phone/{action}", data={"csrf_token": stale, "reason": "keyCompromise"})
    assert_page(response, 403)
    assert statuses(app, phone) == GOOD


@pytest.mark.parametrize("action", ["suspend", "revoke"])
def test_phone_action_without_a_session_is_refused(
    *, browser: FlaskClient, app: Flask, phone: Phone, signed_in: str, action: str,
) -> None:
    token = csrf_token(browser.get("/account"))
    stranger = app.test_client()
    response = stranger.post(f"/account/phone/{action}", data={"csrf_token": token, "reason": "keyCompromise"},
                             headers=EN)
    assert_page(response, 403)
    assert "Log in with My Number at a website" in response.text
    assert statuses(app, phone) == GOOD
    assert stranger.get("/account/phone/suspend", headers=EN).text.count("<form") == 0


@pytest.mark.parametrize("action", ["suspend", "revoke"])
def test_phone_action_touches_only_the_sessions_phone(
    *, browser: FlaskClient, app: Flask, clock: FixedClock, phone: Phone, signed_in: str, action: str,
) -> None:
    flow.enroll_device(app, clock, "device-of-person-2", person="person-2")
    other = sso.enroll_phone(app, clock, person="person-2")
    page = browser.get("/account")
    assert other.device_id not in page.text  # another person's phone is not listed
    form = {"csrf_token": csrf_token(page), "reason": "keyCompromise", "device_id": other.device_id}
    assert browser.post(f"/account/phone/{action}", data=form).status_code == 303
    assert statuses(app, other) == GOOD  # the device id the browser named is ignored
    assert statuses(app, phone) != GOOD


def test_session_whose_phone_was_suspended_elsewhere_ends_at_the_next_visit(
    *, browser: FlaskClient, app: Flask, clock: FixedClock, phone: Phone, signed_in: str,
) -> None:
    token = csrf_token(browser.get("/account"))
    PhoneLife(sessions=services(app).sessions, pki=services(app).pki, clock=clock,
              revoke_grants=services(app).oidc.revoke_device_grants).suspend(phone.device_id, actor="operator")
    response = browser.post("/account/phone/revoke", data={"csrf_token": token, "reason": "keyCompromise"},
                            headers=EN)
    assert_page(response, 403)
    assert "The phone you logged in with is suspended or revoked" in response.text
    assert session_cleared(response)
    hold = (CertificateState.ON_HOLD, x509.ReasonFlags.certificate_hold)
    assert statuses(app, phone) == [hold, hold]  # still only suspended: it may yet be found
    assert "Log in with My Number at a website" in browser.get("/account", headers=EN).text


def test_confirmation_and_result_pages_follow_the_browsers_language(
    *, browser: FlaskClient, signed_in: str,
) -> None:
    ja = {"Accept-Language": "ja"}
    assert "スマートフォンを失効させますか" in browser.get("/account/phone/revoke", headers=ja).text
    assert "Revoke this phone?" in browser.get("/account/phone/revoke", headers=EN).text
    assert "マイナンバーカードをかざして" in browser.get("/account/phone/suspended", headers=ja).text
    assert "スマートフォンを失効させました" in browser.get("/account/phone/revoked", headers=ja).text


# --- a real simulated phone over HTTP: its next login is refused ----------------------------------


@pytest.fixture
def portal(world: World, tmp_path: Path, stores: dict[str, str]) -> Iterator[Portal]:
    """A portal on a loopback port trusting the simulated J-LIS and SE vendor (phone ``pixel``, card ``taro``)."""
    with running_portal(world, tmp_path / "instance", **stores) as running:
        yield running


def browser_login(portal: Portal, browser: requests.Session, client: PortalClient, element: SecureElement,
                  enrollment: Enrollment) -> None:
    """A shop's login in ``browser``, approved on the phone; raises PortalError when the phone is refused.

    Once it completes, the browser holds the portal session it left.
    """
    shop = services(portal.app).oidc.clients.register(
        name="Demo Shop", redirect_uris=[flow.REDIRECT_URI], auth_method="client_secret_basic", scopes=["openid"],
        now=datetime.now(UTC),
    )
    login = new_login(Rp(shop.client.client_id, shop.client_secret))
    page = browser.get(f"{portal.url}/authorize", params=login.params, timeout=10).text
    payload = re.search(r'data-payload="([^"]+)"', page)
    assert payload is not None, page
    approve(client=client, element=element, enrollment=enrollment,
            transaction=client.lookup_transaction(qr=payload.group(1)))
    continue_url = re.search(r'data-continue-url="([^"]+)"', page)
    assert continue_url is not None
    response = browser.get(portal.url + continue_url.group(1), allow_redirects=False, timeout=10)
    assert "code=" in response.headers["Location"]


@pytest.mark.parametrize(("action", "form", "logged_reason"), [
    ("suspend", {}, "certificate_revoked"),  # its user-authentication certificate is on hold
    ("revoke", {"reason": "keyCompromise"}, "unknown_credential"),  # no active device has its key
])
def test_phone_suspended_or_revoked_on_the_account_page_cannot_log_in(
    *, world: World, portal: Portal, caplog: pytest.LogCaptureFixture, action: str, form: dict[str, str],
    logged_reason: str,
) -> None:
    element, client = world.state.load_phone("pixel"), PortalClient(portal.url)
    enrollment = enroll(client=client, element=element, card=world.state.load_card("taro"), auth_pin=AUTH_PIN,
                        sign_pin=SIGN_PIN)
    browser = requests.Session()
    browser_login(portal, browser, client, element, enrollment)
    page = browser.get(f"{portal.url}/account", timeout=10).text
    assert f'data-device-id="{enrollment.device_id}" data-state="active"' in page
    confirm = browser.get(f"{portal.url}/account/phone/{action}", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', confirm)
    assert token is not None, confirm
    done = browser.post(f"{portal.url}/account/phone/{action}", data={"csrf_token": token.group(1), **form},
                        allow_redirects=False, timeout=10)
    assert done.status_code == 303
    assert "Log in with My Number at a website" in browser.get(f"{portal.url}/account", timeout=10,
                                                               headers=EN).text
    caplog.clear()
    with pytest.raises(PortalError) as refused:
        browser_login(portal, requests.Session(), client, element, enrollment)
    assert (refused.value.status, refused.value.type) == (403, "https://id.myna.example/problems/assertion-rejected")
    assert re.findall(r"login\.rejected reason=([a-z_]+)", caplog.text) == [logged_reason]
