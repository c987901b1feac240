"""A phone whose signature certificate is no longer good is told so (``signature-key-renewal-required``),
renews its signature key with the card and approves the same request: over the device API, on the
phone screen and with the ``smartphone`` CLI. A move is the life event: J-LIS revokes the card's
signature certificate (affiliationChanged), ``idp pki sync`` revokes the phone's."""

from __future__ import annotations

import dataclasses
import re
import secrets
from datetime import UTC, datetime, timedelta

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from enrollment_portal import AUTH_PIN, PASSPHRASE, SIGN_PIN, running_portal, sync_revocations
from test_login_ceremony import REDIRECT_URI, Phone, assert_problem, finish_login, redeem, start_login
from test_signing_flow import approve_with, by_signature_key, look_up, results, start_signing

from idp.app import services
from idp.clock import FixedClock
from idp.settings import LimitsSettings
from smartphone.card import CardKey
from smartphone.cli import main as smartphone_main
from smartphone.phone_screen import create_phone_app, enrollment_record, load_enrollment
from smartphone.portal_client import SIGNATURE_KEY_RENEWAL, PortalClient, PortalError, enroll, reenroll_signature_key

ATTRIBUTES = "openid name address birthdate gender"
NEW_ADDRESS = "大阪府大阪市北区中之島1-3-20"
ENV = {"SMARTPHONE_PASSPHRASE": PASSPHRASE.decode()}


@pytest.fixture
def portal(world, tmp_path):
    """A portal that follows the J-LIS linking feed (SQLite, in-process store)."""
    configured = world.pki_settings
    world.pki_settings = lambda: dataclasses.replace(configured(), jlis_linking_url=f"{world.jlis_url}/linking")
    with running_portal(world, tmp_path / "instance") as portal:
        yield portal


@pytest.fixture
def shop(portal):
    return services(portal.app).oidc.clients.register(
        name="Demo Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic",
        scopes=[*ATTRIBUTES.split(), "sign"], now=datetime.now(UTC),
    )


@pytest.fixture
def phone(world, portal) -> Phone:
    """``pixel`` enrolled with ``taro``, and kept in the state directory as ``smartphone enroll`` keeps it."""
    element, card = world.state.load_phone("pixel"), world.state.load_card("taro")
    client = PortalClient(portal.url)
    enrollment = enroll(client=client, element=element, card=card, auth_pin=AUTH_PIN, sign_pin=SIGN_PIN)
    world.state.save_phone("pixel", element)
    world.state.save_enrollment("pixel", enrollment_record(enrollment))
    return Phone(client=client, element=element, enrollment=enrollment)


def smartphone(*args: str, state) -> object:
    return CliRunner().invoke(smartphone_main, [*args, "--state", str(state.root)], env=ENV)


def move(world, portal) -> None:
    """``smartphone card move`` at J-LIS, then the operator's sync (CRLs and the cascade to phones)."""
    moved = smartphone("card", "move", "--card", "taro", "--address", NEW_ADDRESS, "--prefecture", "大阪府",
                       "--city", "大阪市", state=world.state)
    assert moved.exit_code == 0, moved.output
    sync_revocations(portal.settings)


def reload(world, phone: Phone) -> Phone:
    """The phone as the state directory now has it (after a CLI command or the phone screen changed it)."""
    return dataclasses.replace(phone, element=world.state.load_phone("pixel"),
                               enrollment=load_enrollment(world.state, "pixel"))


def renewal_refused(phone: Phone, transaction: dict) -> PortalError:
    with pytest.raises(PortalError) as refused:
        phone.approve(transaction)
    assert_problem(refused.value, 403, "signature-key-renewal-required")
    return refused.value


def userinfo(portal, shop, login) -> dict:
    tokens = redeem(portal, shop, login, finish_login(portal, login)["code"][0])
    return requests.get(f"{portal.url}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"},
                        timeout=10).json()


def log_in(portal, shop, phone: Phone, *, scope: str = ATTRIBUTES) -> dict:
    login = start_login(portal, shop, scope=scope)
    phone.approve(phone.lookup(login))
    return userinfo(portal, shop, login)


# --- the device API ------------------------------------------------------------------------------------


def test_a_moved_phone_renews_its_signature_key_and_approves_the_same_request(world, portal, shop, phone, caplog):
    before = log_in(portal, shop, phone)
    move(world, portal)
    login = start_login(portal, shop, scope=ATTRIBUTES)
    transaction = phone.lookup(login)
    caplog.clear()

    refused = renewal_refused(phone, transaction)

    assert refused.type == SIGNATURE_KEY_RENEWAL
    assert refused.members["signature_certificate"] == {"status": "revoked", "reason": "affiliationChanged"}
    assert refused.signature_key_renewal == "affiliationChanged"
    assert re.findall(r"login\.rejected reason=([a-z_]+)", caplog.text) == ["certificate_revoked"]
    renewed = reenroll_signature_key(client=phone.client, element=phone.element, enrollment=phone.enrollment,
                                     card=world.state.load_card("taro"), sign_pin=SIGN_PIN)
    phone = dataclasses.replace(phone, enrollment=renewed)
    assert phone.approve(transaction) == {"status": "approved"}  # the same request, still open
    after = userinfo(portal, shop, login)
    assert after["sub"] == before["sub"]
    assert after["address"] == {"formatted": NEW_ADDRESS}
    assert before["address"] != after["address"]


@pytest.mark.parametrize(("reason", "expected"), [
    (x509.ReasonFlags.superseded, {"status": "revoked", "reason": "superseded"}),
    (x509.ReasonFlags.certificate_hold, {"status": "on_hold", "reason": "certificateHold"}),
    (x509.ReasonFlags.key_compromise, {"status": "revoked", "reason": "keyCompromise"}),
], ids=["superseded", "on-hold", "key-compromise"])
def test_a_signature_certificate_revoked_alone_asks_for_a_new_key(portal, shop, phone, reason, expected):
    services(portal.app).pki.revoke(phone.enrollment.sign_certificate.serial_number, reason)
    refused = renewal_refused(phone, phone.lookup(start_login(portal, shop, scope=ATTRIBUTES)))
    assert refused.members["signature_certificate"] == expected


def test_a_login_without_attributes_needs_no_signature_key(world, portal, shop, phone):
    move(world, portal)
    assert log_in(portal, shop, phone, scope="openid")["sub"]


def test_an_assertion_for_another_transaction_is_refused_before_the_signature_certificate_is_told(
        portal, shop, phone, caplog):
    services(portal.app).pki.revoke(phone.enrollment.sign_certificate.serial_number,
                                    x509.ReasonFlags.affiliation_changed)
    first = phone.lookup(start_login(portal, shop, scope=ATTRIBUTES))
    wrong = dict(first, public_key=phone.lookup(start_login(portal, shop, scope=ATTRIBUTES))["public_key"])
    caplog.clear()
    with pytest.raises(PortalError) as refused:
        phone.approve(wrong)
    assert_problem(refused.value, 403, "assertion-rejected")
    assert "signature_certificate" not in refused.value.members
    assert re.findall(r"login\.rejected reason=([a-z_]+)", caplog.text) == ["challenge_mismatch"]


def test_a_phone_whose_authentication_certificate_is_revoked_is_refused_not_asked_to_renew(portal, shop, phone):
    pki = services(portal.app).pki
    pki.revoke(phone.enrollment.sign_certificate.serial_number, x509.ReasonFlags.affiliation_changed)
    pki.revoke(phone.enrollment.auth_certificate.serial_number, x509.ReasonFlags.key_compromise)
    with pytest.raises(PortalError) as refused:
        phone.approve(phone.lookup(start_login(portal, shop, scope=ATTRIBUTES)))
    assert_problem(refused.value, 403, "assertion-rejected")


def test_a_signing_request_asks_for_a_new_signature_key_before_assembling(world, portal, shop, phone, caplog):
    move(world, portal)
    login = start_signing(portal, shop)
    transaction = look_up(phone, login)
    caplog.clear()
    with pytest.raises(PortalError) as refused:
        approve_with(phone, transaction, [by_signature_key(phone, document) for document in transaction["documents"]])
    assert_problem(refused.value, 403, "signature-key-renewal-required")
    assert refused.value.members["signature_certificate"] == {"status": "revoked", "reason": "affiliationChanged"}
    assert re.findall(r"signing\.rejected reason=([a-z_]+)", caplog.text) == ["certificate_revoked"]


def test_renewal_refusals_do_not_lock_the_persons_approvals(world, tmp_path):
    """Only refused proofs count towards the lock-out (``limits.failed_approvals``): not a phone that proved itself."""
    with running_portal(world, tmp_path / "locked", limits=LimitsSettings(failed_approvals=2)) as portal:
        shop = services(portal.app).oidc.clients.register(
            name="Demo Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic",
            scopes=ATTRIBUTES.split(), now=datetime.now(UTC))
        element, client = world.state.load_phone("pixel"), PortalClient(portal.url)
        phone = Phone(client=client, element=element, enrollment=enroll(
            client=client, element=element, card=world.state.load_card("taro"), auth_pin=AUTH_PIN,
            sign_pin=SIGN_PIN))
        services(portal.app).pki.revoke(phone.enrollment.sign_certificate.serial_number,
                                        x509.ReasonFlags.affiliation_changed)
        login = start_login(portal, shop, scope=ATTRIBUTES)
        transaction = phone.lookup(login)
        for _ in range(3):
            renewal_refused(phone, transaction)
        phone = dataclasses.replace(phone, enrollment=reenroll_signature_key(
            client=phone.client, element=phone.element, enrollment=phone.enrollment,
            card=world.state.load_card("taro"), sign_pin=SIGN_PIN))
        assert phone.approve(transaction) == {"status": "approved"}


# --- the smartphone CLI -----------------------------------------------------------------------------------


def test_the_cli_renews_the_signature_key_of_a_moved_phone(world, portal, shop, phone):
    before = log_in(portal, shop, phone)
    world.state.save_phone("pixel", phone.element)  # its counter went up
    move(world, portal)

    result = smartphone("phone", "reenroll-signature-key", "--phone", "pixel", "--card", "taro",
                        "--sign-pin", SIGN_PIN, state=world.state)

    assert result.exit_code == 0, result.output
    renewed = reload(world, phone)
    assert result.output == (
        f"phone 'pixel' (device {phone.enrollment.device_id}) has a new signature key at {portal.url}\n"
        f"  signature certificate {renewed.enrollment.sign_certificate.serial_number:x}\n")
    assert renewed.enrollment.sign_certificate.serial_number != phone.enrollment.sign_certificate.serial_number
    after = log_in(portal, shop, renewed)
    assert (after["sub"], after["address"]) == (before["sub"], {"formatted": NEW_ADDRESS})


def test_the_cli_approve_says_how_to_renew(world, portal, shop, phone):
    move(world, portal)
    login = start_login(portal, shop, scope=ATTRIBUTES)
    result = smartphone("approve", "--phone", "pixel", "--qr", login.qr_payload, state=world.state)
    assert result.exit_code == 1
    assert result.output.endswith(
        "Error: the portal refused: The signature certificate is no longer valid; enroll a new signature key with "
        f"the card ({SIGNATURE_KEY_RENEWAL}); renew it (signature certificate affiliationChanged) with "
        "`smartphone phone reenroll-signature-key --phone pixel --card CARD`, then approve again\n")


def test_the_cli_refuses_a_wrong_signature_pin_and_keeps_the_old_key(world, portal, phone):
    move(world, portal)
    result = smartphone("phone", "reenroll-signature-key", "--phone", "pixel", "--card", "taro",
                        "--sign-pin", "WRONG2024", state=world.state)
    assert result.exit_code == 1
    assert result.output == "Error: wrong signature PIN: 4 tries left\n"
    assert load_enrollment(world.state, "pixel").sign_certificate == phone.enrollment.sign_certificate
    assert world.state.load_card("taro").tries_left(CardKey.SIGN) == 4


def test_the_cli_refuses_a_phone_that_is_not_enrolled(world, portal):
    world.add_phone("galaxy")
    result = smartphone("phone", "reenroll-signature-key", "--phone", "galaxy", "--card", "taro",
                        "--sign-pin", SIGN_PIN, state=world.state)
    assert result.exit_code == 1
    assert result.output == "Error: phone 'galaxy' is not enrolled: enroll it with a card first\n"


# --- the phone screen ------------------------------------------------------------------------------------


def form_token(page: str) -> str:
    return re.search(r'name="form_token" value="([^"]+)"', page).group(1)


def test_the_phone_screen_asks_to_tap_the_card_then_approves(world, portal, shop, phone):
    before = log_in(portal, shop, phone)
    world.state.save_phone("pixel", phone.element)  # its counter went up
    move(world, portal)
    screen = create_phone_app(world.state.root, "pixel", portal.url, PASSPHRASE).test_client()
    login = start_login(portal, shop, scope=ATTRIBUTES)
    home = screen.get("/").get_data(as_text=True)
    shown = screen.post("/scan", data={"form_token": form_token(home), "code": login.qr_payload}).get_data(
        as_text=True)
    action = re.search(r'action="(/transactions/[^"]+)"', shown).group(1)

    asked = screen.post(action, data={"form_token": form_token(home), "action": "approve"}).get_data(as_text=True)

    assert 'data-view="renew"' in asked
    assert ("住所が変わりました。カードをタッチして署名用の鍵を更新してください。 / "
            "Your address changed: tap your card to renew the signature key.") in asked
    transaction_id = action.rsplit("/", 1)[1]
    assert f'name="transaction_id" value="{transaction_id}"' in asked

    wrong = screen.post("/signature-key", data={"form_token": form_token(home), "card": "taro",
                                                "sign_pin": "WRONG2024", "transaction_id": transaction_id})
    wrong_page = wrong.get_data(as_text=True)
    assert 'data-view="renew"' in wrong_page
    assert "鍵を更新できません / Cannot renew the key: wrong signature PIN: 4 tries left" in wrong_page

    renewed = screen.post("/signature-key", data={"form_token": form_token(home), "card": "taro",
                                                  "sign_pin": SIGN_PIN, "transaction_id": transaction_id})
    renewed_page = renewed.get_data(as_text=True)
    assert 'data-view="transaction"' in renewed_page
    assert "署名用の鍵を更新しました / Signature key renewed." in renewed_page

    approved = screen.post(action, data={"form_token": form_token(home), "action": "approve"}).get_data(
        as_text=True)
    assert "Approved: Demo Shop" in approved, approved
    after = userinfo(portal, shop, login)
    assert (after["sub"], after["address"]) == (before["sub"], {"formatted": NEW_ADDRESS})


def test_the_phone_screen_refuses_an_unknown_card_for_the_renewal(world, portal, phone):
    screen = create_phone_app(world.state.root, "pixel", portal.url, PASSPHRASE).test_client()
    home = screen.get("/").get_data(as_text=True)
    page = screen.post("/signature-key", data={"form_token": form_token(home), "card": "nobody",
                                               "sign_pin": SIGN_PIN}).get_data(as_text=True)
    assert 'data-view="renew"' in page
    assert "カードがありません / No such card: &#39;nobody&#39;" in page


# --- a signing request looked up before the renewal ---------------------------------------------------------


def test_a_signing_approval_prepared_for_the_old_certificate_asks_for_a_new_lookup(world, tmp_path, caplog):
    """The documents were prepared for the revoked certificate: after the renewal the phone is told to look
    the transaction up again (with the code it scanned, now stale), not refused, and never locked out."""
    with running_portal(world, tmp_path / "fixed", clock=FixedClock(datetime.now(UTC)),
                        limits=LimitsSettings(failed_approvals=2)) as portal:
        shop = services(portal.app).oidc.clients.register(
            name="Demo Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic",
            scopes=["openid", "sign"], now=datetime.now(UTC))
        element, client = world.state.load_phone("pixel"), PortalClient(portal.url)
        phone = Phone(client=client, element=element, enrollment=enroll(
            client=client, element=element, card=world.state.load_card("taro"), auth_pin=AUTH_PIN,
            sign_pin=SIGN_PIN))
        services(portal.app).pki.revoke(phone.enrollment.sign_certificate.serial_number,
                                        x509.ReasonFlags.affiliation_changed)
        login = start_signing(portal, shop)
        transaction = look_up(phone, login)
        with pytest.raises(PortalError) as refused:
            approve_with(phone, transaction, signed(phone, transaction))
        assert_problem(refused.value, 403, "signature-key-renewal-required")
        phone = dataclasses.replace(phone, enrollment=reenroll_signature_key(
            client=phone.client, element=phone.element, enrollment=phone.enrollment,
            card=world.state.load_card("taro"), sign_pin=SIGN_PIN))
        caplog.clear()

        for _ in range(3):  # more than failed_approvals: none of them counts
            with pytest.raises(PortalError) as stale:
                approve_with(phone, transaction, signed(phone, transaction))
            assert_problem(stale.value, 409, "transaction-lookup-required")
        assert "signing.rejected" not in caplog.text

        clock = services(portal.app).clock
        clock.advance(portal.settings.login.qr_max_age + timedelta(seconds=2))  # the scanned code is stale now
        with pytest.raises(PortalError) as elsewhere:  # for anyone but the phone the documents were prepared for
            phone.client.lookup_transaction(qr=login.qr_payload, credential_id=secrets.token_bytes(32))
        assert_problem(elsewhere.value, 400, "invalid-transaction-code")
        again = look_up(phone, login)
        assert again["transaction_id"] == transaction["transaction_id"]
        assert [document["to_be_signed"] for document in again["documents"]] != [
            document["to_be_signed"] for document in transaction["documents"]]

        assert approve_with(phone, again, signed(phone, again)) == {"status": "approved"}
        tokens = redeem(portal, shop, login, finish_login(portal, login)["code"][0])
        assert results(portal, tokens["access_token"]).status_code == 200


def signed(phone: Phone, transaction: dict) -> list[bytes]:
    return [by_signature_key(phone, document) for document in transaction["documents"]]


def test_the_phone_screen_renews_the_key_and_signs_the_request_it_looked_up_before(world, portal, shop, phone):
    move(world, portal)
    screen = create_phone_app(world.state.root, "pixel", portal.url, PASSPHRASE).test_client()
    login = start_signing(portal, shop)
    home = screen.get("/").get_data(as_text=True)
    shown = screen.post("/scan", data={"form_token": form_token(home), "code": login.qr_payload}).get_data(
        as_text=True)
    action = re.search(r'action="(/transactions/[^"]+)"', shown).group(1)
    asked = screen.post(action, data={"form_token": form_token(home), "action": "approve"}).get_data(as_text=True)
    assert 'data-view="renew"' in asked

    renewed = screen.post("/signature-key", data={"form_token": form_token(home), "card": "taro",
                                                  "sign_pin": SIGN_PIN, "transaction_id": action.rsplit("/", 1)[1]})
    renewed_page = renewed.get_data(as_text=True)
    assert 'data-view="transaction"' in renewed_page
    assert "Lease contract" in renewed_page

    approved = screen.post(action, data={"form_token": form_token(home), "action": "approve"}).get_data(
        as_text=True)
    assert "Approved: Demo Shop" in approved, approved
    tokens = redeem(portal, shop, login, finish_login(portal, login)["code"][0])
    assert results(portal, tokens["access_token"]).status_code == 200
