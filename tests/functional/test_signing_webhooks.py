"""Signing webhooks over real HTTP: the RP pushes a signing request, the phone approves, declines or
lets it expire, and the dispatcher posts one signed event to the RP's receiver.

The receiver verifies each message with the ``standardwebhooks`` library, its clock set to the
portal's (the test moves the portal's clock past a request's end). On SQLite with the in-process
store and on PostgreSQL with Redis.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
import standardwebhooks.webhooks
from enrollment_portal import AUTH_PIN, SIGN_PIN, running_portal
from sqlalchemy import func, select, update
from standardwebhooks import Webhook
from test_login_ceremony import REDIRECT_URI, Login, Phone, assert_problem, finish_login, redeem
from test_signing_flow import CONTRACT, PDF, by_signature_key, look_up, push, results, two_documents

from idp.app import services
from idp.clock import FixedClock
from idp.signing.flow import Decision, SigningFlow
from idp.signing.records import SignatureResult
from idp.webhooks import Dispatcher, HttpSender, WebhookDelivery, WebhookOutbox
from smartphone.portal_client import PortalClient, PortalError, approve, b64url_decode, enroll


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.messages.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def receiver():
    """The RP's webhook endpoint on a loopback port; its ``messages`` are (headers, body)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.messages = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def portal(world, tmp_path, stores):
    with running_portal(world, tmp_path / "instance", clock=FixedClock(datetime.now(UTC)), **stores) as portal:
        yield portal


@pytest.fixture
def phone(world, portal) -> Phone:
    element, card = world.state.load_phone("pixel"), world.state.load_card("taro")
    client = PortalClient(portal.url)
    enrollment = enroll(client=client, element=element, card=card, auth_pin=AUTH_PIN, sign_pin=SIGN_PIN)
    return Phone(client=client, element=element, enrollment=enrollment)


@pytest.fixture
def shop(portal, receiver):
    """The RP, registered with its webhook."""
    registered = services(portal.app).oidc.clients.register(
        name="Demo Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic", scopes=["openid", "sign"],
        webhook_url=f"http://127.0.0.1:{receiver.server_port}/webhooks", now=datetime.now(UTC),
    )
    assert registered.webhook_secret is not None
    return registered


@pytest.fixture(autouse=True)
def receiver_on_portal_time(monkeypatch, portal):
    """The receiver's verifier reads the portal's clock (it refuses a timestamp 5 minutes off)."""
    clock = services(portal.app).clock

    class PortalTime(datetime):
        @classmethod
        def now(cls, tz=None):
            return clock.now().astimezone(tz)

    monkeypatch.setattr(standardwebhooks.webhooks, "datetime", PortalTime)


def dispatch(portal) -> tuple[int, int, int]:
    """One round of ``idp webhooks run --once`` on the portal's database and clock."""
    found = services(portal.app)
    settings = found.settings
    outbox = WebhookOutbox(found.sessions, request_lifetime=settings.oidc.request_uri_ttl)
    tally = Dispatcher(found.sessions, outbox=outbox, sender=HttpSender(), clock=found.clock).run_once()
    return tally.delivered, tally.retrying, tally.failed


def one_document() -> list[dict]:
    digest = base64.b64encode(hashlib.sha256(CONTRACT).digest()).decode()
    return [{"type": "document_signature", "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1",
             "documentDigests": [{"label": "Lease contract", "hash": digest}]}]


def start(portal, shop, details) -> tuple[str, Login]:
    """The RP pushes; the browser opens the login page. The request_uri and the login."""
    pushed = push(portal, shop, details)
    assert pushed.status_code == 201, pushed.text
    request_uri = pushed.json()["request_uri"]
    browser = requests.Session()
    query = {"client_id": shop.client.client_id, "request_uri": request_uri}
    page = browser.get(f"{portal.url}/authorize?{urlencode(query)}", allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.text
    return request_uri, Login(browser=browser, verifier=pushed.verifier, state="", nonce="", page=page.text)


def verified(shop, message) -> dict:
    headers, body = message
    return Webhook(shop.webhook_secret).verify(body, headers)


def stored_results(portal) -> int:
    with services(portal.app).sessions() as session:
        return session.scalar(select(func.count()).select_from(SignatureResult))


def deliveries(portal) -> list[WebhookDelivery]:
    with services(portal.app).sessions() as session:
        return list(session.scalars(select(WebhookDelivery)).all())


def test_completed_request_is_announced_once_with_its_documents(portal, shop, phone, receiver):
    request_uri, login = start(portal, shop, two_documents())
    assert dispatch(portal) == (0, 0, 0)  # nothing is due while the request is open
    assert phone.approve(look_up(phone, login)) == {"status": "approved"}

    assert dispatch(portal) == (1, 0, 0)
    (message,) = receiver.messages
    body = verified(shop, message)
    assert body == {
        "type": "signing.completed", "request_uri": request_uri, "client_id": shop.client.client_id,
        "occurred_at": body["occurred_at"],
        "documents": [
            {"label": "Lease contract", "hash": base64.b64encode(hashlib.sha256(CONTRACT).digest()).decode()},
            {"label": "Terms of sale", "hash": base64.b64encode(hashlib.sha256(PDF).digest()).decode()},
        ],
    }
    assert datetime.fromisoformat(body["occurred_at"]) <= services(portal.app).clock.now()
    # The announced completion has its results: the RP redeems its code and reads them.
    tokens = redeem(portal, shop, login, finish_login(portal, login)["code"][0])
    assert results(portal, tokens["access_token"]).status_code == 200

    services(portal.app).clock.advance(timedelta(minutes=10))  # past the request's end: no "expired" follows
    assert dispatch(portal) == (0, 0, 0)
    assert len(receiver.messages) == 1


def test_declined_request_is_announced_as_declined(portal, shop, phone, receiver):
    request_uri, login = start(portal, shop, one_document())
    transaction = look_up(phone, login)
    phone.client.decline_transaction(transaction["transaction_id"])
    assert dispatch(portal) == (1, 0, 0)
    body = verified(shop, receiver.messages[0])
    assert (body["type"], body["request_uri"]) == ("signing.declined", request_uri)
    assert "documents" not in body
    services(portal.app).clock.advance(timedelta(minutes=10))
    assert dispatch(portal) == (0, 0, 0)


def test_expired_request_is_announced_and_a_late_approval_stores_nothing(portal, shop, phone, receiver):
    request_uri, login = start(portal, shop, one_document())
    transaction = look_up(phone, login)
    # The outbox row reaches the request's end while the login transaction is still open (here
    # the end is brought forward; the row is not yet claimed): only the outbox's expiry guard can
    # refuse the completion.
    now = services(portal.app).clock.now()
    with services(portal.app).sessions.begin() as session:
        session.execute(update(WebhookDelivery).values(expires_at=now, due_at=now, occurred_at=now))

    with pytest.raises(PortalError) as refused:
        approve_signing(phone, transaction)

    assert_problem(refused.value, 410, "transaction-expired")
    assert stored_results(portal) == 0
    status = login.browser.get(f"{portal.url}/login/{transaction['transaction_id']}/status", timeout=10)
    assert status.json()["status"] == "scanned"  # the login itself was still open
    assert dispatch(portal) == (1, 0, 0)
    body = verified(shop, receiver.messages[0])
    assert (body["type"], body["request_uri"], body["client_id"]) == (
        "signing.expired", request_uri, shop.client.client_id,
    )
    assert dispatch(portal) == (0, 0, 0)
    assert len(receiver.messages) == 1


def approve_signing(phone, transaction: dict) -> dict:
    options = transaction["public_key"]
    assertion = phone.element.get_assertion(
        credential_id=phone.enrollment.auth_credential_id, rp_id=options["rpId"],
        challenge=b64url_decode(options["challenge"]), origin=phone.client.base_url,
    )
    return phone.client.approve_transaction(
        transaction["transaction_id"], assertion=assertion, consent_signature=None,
        document_signatures=[by_signature_key(phone, document) for document in transaction["documents"]],
    )


def test_a_client_without_a_webhook_gets_no_outbox_row(portal, phone, receiver):
    plain = services(portal.app).oidc.clients.register(
        name="Plain Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic", scopes=["openid", "sign"],
        now=datetime.now(UTC),
    )
    _request_uri, login = start(portal, plain, one_document())
    assert approve(client=phone.client, element=phone.element, enrollment=phone.enrollment,
                   transaction=look_up(phone, login)) == {"status": "approved"}
    assert stored_results(portal) == 1
    assert deliveries(portal) == []
    services(portal.app).clock.advance(timedelta(minutes=10))
    assert dispatch(portal) == (0, 0, 0)
    assert receiver.messages == []


# --- the browser's cancel racing the phone ---------------------------------------------------------------


@pytest.fixture
def plain_shop(portal):
    """An RP without a webhook: no outbox row orders its requests' endings."""
    return services(portal.app).oidc.clients.register(
        name="Plain Shop", redirect_uris=[REDIRECT_URI], auth_method="client_secret_basic", scopes=["openid", "sign"],
        now=datetime.now(UTC),
    )


@pytest.fixture(params=["shop", "plain_shop"], ids=["webhook", "no-webhook"])
def rp(request):
    """Each kind of RP: the race is closed with and without an outbox row."""
    return request.getfixturevalue(request.param)


def cancel(portal, login: Login, transaction_id: str) -> requests.Response:
    return login.browser.post(f"{portal.url}/login/{transaction_id}/cancel", allow_redirects=False, timeout=10)


def denied(response: requests.Response) -> dict[str, list[str]]:
    assert response.status_code in {302, 303}, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    return parse_qs(urlsplit(location).query)


def test_a_cancel_posted_after_the_documents_were_signed_follows_the_phone(portal, phone, receiver, monkeypatch, rp):
    _request_uri, login = start(portal, rp, one_document())
    transaction = look_up(phone, login)
    cancelled = []
    finish = SigningFlow.finish

    def finish_then_cancel(self, **arguments):  # the browser's cancel lands between the store and the settle
        stored = finish(self, **arguments)
        cancelled.append(cancel(portal, login, transaction["transaction_id"]))
        return stored

    monkeypatch.setattr(SigningFlow, "finish", finish_then_cancel)
    assert approve_signing(phone, transaction) == {"status": "approved"}

    (answer,) = cancelled
    assert answer.status_code == 200  # the login page again, still waiting for the phone's settle
    assert "Location" not in answer.headers
    tokens = redeem(portal, rp, login, finish_login(portal, login)["code"][0])
    assert results(portal, tokens["access_token"]).status_code == 200
    assert stored_results(portal) == 1
    if rp.webhook_secret is not None:
        assert dispatch(portal) == (1, 0, 0)
        assert verified(rp, receiver.messages[0])["type"] == "signing.completed"
    else:
        assert deliveries(portal) == []


def test_an_approval_after_the_browser_cancelled_stores_nothing(portal, phone, receiver, rp):
    request_uri, login = start(portal, rp, one_document())
    transaction = look_up(phone, login)

    assert denied(cancel(portal, login, transaction["transaction_id"]))["error"] == ["access_denied"]
    with pytest.raises(PortalError) as refused:
        approve_signing(phone, transaction)

    assert_problem(refused.value, 409, "transaction-closed")
    assert stored_results(portal) == 0
    if rp.webhook_secret is not None:  # the cancel is the user's no: announced at once, as a decline on the phone is
        assert dispatch(portal) == (1, 0, 0)
        body = verified(rp, receiver.messages[0])
        assert (body["type"], body["request_uri"]) == ("signing.declined", request_uri)
    else:
        assert deliveries(portal) == []


def test_a_decline_overtaken_by_the_browsers_cancel_is_the_same_no(portal, shop, phone, receiver, monkeypatch):
    _request_uri, login = start(portal, shop, one_document())
    transaction = look_up(phone, login)
    cancelled = []
    decide = SigningFlow.decide

    def cancel_first(self, transaction_id, decision):  # the cancel lands after the phone's decline was let in
        if decision is Decision.DECLINE:
            cancelled.append(cancel(portal, login, transaction_id))
        return decide(self, transaction_id, decision)

    monkeypatch.setattr(SigningFlow, "decide", cancel_first)
    assert phone.client.decline_transaction(transaction["transaction_id"]) == {"status": "declined"}

    assert denied(cancelled[0])["error"] == ["access_denied"]
    assert dispatch(portal) == (1, 0, 0)
    assert verified(shop, receiver.messages[0])["type"] == "signing.declined"
    status = login.browser.get(f"{portal.url}/login/{transaction['transaction_id']}/status", timeout=10)
    assert status.json()["status"] == "cancelled"


SECOND_ANSWERS = {
    "decline": lambda phone, transaction: phone.client.decline_transaction(transaction["transaction_id"]),
    "approve": approve_signing,
}


@pytest.mark.parametrize("second", SECOND_ANSWERS)
def test_the_phone_cannot_answer_again_while_its_approval_stores_the_documents(
        portal, shop, phone, monkeypatch, second):
    _request_uri, login = start(portal, shop, one_document())
    transaction = look_up(phone, login)
    answers = []
    finish = SigningFlow.finish

    def answer_again(self, **arguments):  # a second answer from the phone lands while the first is storing
        stored = finish(self, **arguments)
        with pytest.raises(PortalError) as refused:
            SECOND_ANSWERS[second](phone, transaction)
        answers.append(refused.value)
        return stored

    monkeypatch.setattr(SigningFlow, "finish", answer_again)
    assert approve_signing(phone, transaction) == {"status": "approved"}

    assert_problem(answers[0], 409, "transaction-closed")
    assert stored_results(portal) == 1
    assert [row.event for row in deliveries(portal)] == ["completed"]
    assert "code" in finish_login(portal, login)
