"""Signing webhooks: the outbox decides one event per request, the dispatcher signs and retries.

A receiving HTTP server in the test verifies each message with the ``standardwebhooks`` library,
as an RP would. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import standardwebhooks.webhooks
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import MetaData, func, inspect, select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

import idp.store.models  # noqa: F401 - every record on Base.metadata
from idp.cli import main
from idp.clock import FixedClock
from idp.oidc import ClientRegistry, InvalidClientMetadata
from idp.ops.metrics import REGISTRY
from idp.signing.records import SignatureResult
from idp.signing.results import SignedResult, SigningResults
from idp.store.database import Base, alembic_config, make_engine, make_session_factory, migration_connection, upgrade
from idp.webhooks import (
    RETRY_DELAYS,
    DeliveryStatus,
    Dispatcher,
    HttpSender,
    InvalidWebhookUrl,
    RequestEnded,
    WebhookDelivery,
    WebhookEvent,
    WebhookOutbox,
    WebhookRegistry,
    check_webhook_url,
)
from idp.webhooks.delivery import Message
from idp.webhooks.dispatcher import DELIVERED_RETENTION, jittered
from idp.webhooks.outbox import LEASE

NOW = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
LIFETIME = timedelta(minutes=6)
REQUEST_URI = "urn:ietf:params:oauth:request_uri:abc123"
DOCUMENTS = [{"label": "Lease contract", "hash": base64.b64encode(hashlib.sha256(b"lease").digest()).decode()}]


# --- a receiver, as an RP runs one ------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook endpoint on a loopback port answering ``status`` (after ``delay`` seconds)."""

    url: str
    received: list[Received] = field(default_factory=list)
    status: int = 204
    delay: float = 0.0
    location: str | None = None


class _Handler(BaseHTTPRequestHandler):
    receiver: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.receiver.received.append(Received(headers=dict(self.headers.items()), body=body))  # type: ignore[attr-defined]
        time.sleep(self.server.receiver.delay)  # type: ignore[attr-defined]
        self.send_response(self.server.receiver.status)  # type: ignore[attr-defined]
        if self.server.receiver.location:  # type: ignore[attr-defined]
            self.send_header("Location", self.server.receiver.location)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    found = Receiver(url=f"http://127.0.0.1:{server.server_port}/hooks/myna")
    server.receiver = found  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def on_portal_time(monkeypatch: pytest.MonkeyPatch, clock: FixedClock) -> None:
    """The receiver's clock agrees with the portal's (the verifier refuses a timestamp 5 min off)."""

    class PortalTime(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return clock.now().astimezone(tz)  # type: ignore[arg-type]

    monkeypatch.setattr(standardwebhooks.webhooks, "datetime", PortalTime)


# --- the world: a database with one client that has a webhook --------------------------------


@dataclass
class World:
    sessions: sessionmaker[Session]
    outbox: WebhookOutbox
    webhooks: WebhookRegistry
    client_id: str
    secret: str


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def world(sessions: sessionmaker[Session], receiver: Receiver) -> World:
    registered = ClientRegistry(sessions).register(
        name="Shop", redirect_uris=["https://shop.example/cb"], auth_method="client_secret_basic",
        scopes=["openid"], webhook_url=receiver.url, now=NOW,
    )
    assert registered.webhook_secret is not None
    return World(sessions=sessions, outbox=WebhookOutbox(sessions, request_lifetime=LIFETIME),
                 webhooks=WebhookRegistry(sessions), client_id=registered.client.client_id,
                 secret=registered.webhook_secret)


def dispatcher(world: World, clock: FixedClock, **options: object) -> Dispatcher:
    options.setdefault("sender", HttpSender(timeout=timedelta(seconds=2)))
    options.setdefault("jitter", lambda delay: delay)
    return Dispatcher(world.sessions, outbox=world.outbox, clock=clock, **options)  # type: ignore[arg-type]


def rows(world: World) -> list[WebhookDelivery]:
    with world.sessions() as session:
        return list(session.scalars(select(WebhookDelivery)).all())


def schedule(world: World, request_id: str = "r" * 32) -> None:
    assert world.outbox.schedule(request_id=request_id, client_id=world.client_id, request_uri=REQUEST_URI, now=NOW)


def complete(world: World, *, now: datetime, request_id: str = "r" * 32) -> None:
    """Store one result with the completion, as the signing flow does."""
    SigningResults(world.sessions).save(
        request_id=request_id, client_id=world.client_id, now=now, device_id="device-1", person_id="person-1",
        results=[SignedResult(label="Lease contract", digest=hashlib.sha256(b"lease").digest(),
                              signature_format="cades", cms=b"cms", signed_pdf=None, assertion="jws")],
        announce=lambda session: world.outbox.complete(session, request_id=request_id, client_id=world.client_id,
                                                       documents=DOCUMENTS, now=now),
    )


def stored_results(world: World) -> int:
    with world.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(SignatureResult)) or 0)


def verified(world: World, message: Received) -> dict:
    return Webhook(world.secret).verify(message.body, message.headers)


# --- the schema ------------------------------------------------------------------------------


def test_migrations_create_exactly_the_webhook_models(database_url: str) -> None:
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for name in ("oidc_clients", "client_webhooks", "webhook_deliveries"):
        Base.metadata.tables[name].to_metadata(metadata)
    engine = make_engine(database_url)
    try:
        with migration_connection(engine) as connection:
            command.upgrade(alembic_config(connection), "head")
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
        assert [d for d in differences if "webhook" in repr(d)] == []
        with migration_connection(engine) as connection:
            command.downgrade(alembic_config(connection), "0009")
        tables = inspect(engine).get_table_names()
        assert "client_webhooks" not in tables
        assert "webhook_deliveries" not in tables
    finally:
        engine.dispose()


# --- the webhook URL and secret ---------------------------------------------------------------


@pytest.mark.parametrize(("url", "why"), [
    ("http://shop.example/hooks", "must use https"),
    ("ftp://shop.example/hooks", "must use https"),
    ("https://shop.example/hooks#frag", "must not include a fragment"),
    ("https://user:pw@shop.example/hooks", "must not include user information"),
    ("/hooks", "is not an absolute URL with a host"),
    ("https://shop.example/ hooks", "must not contain spaces or control characters"),
    ("https://shop.example:99999/hooks", "is not a valid URL"),
    ("", "must be a non-empty string"),
])
def test_unacceptable_webhook_url_is_refused(url: str, why: str) -> None:
    with pytest.raises(InvalidWebhookUrl) as refused:
        check_webhook_url(url)
    assert why in str(refused.value)


@pytest.mark.parametrize("url", ["https://shop.example/hooks", "http://127.0.0.1:9000/h", "http://localhost/h",
                                 "http://[::1]:8080/h"])
def test_https_and_loopback_http_webhooks_are_accepted(url: str) -> None:
    assert check_webhook_url(url) == url


def test_registration_with_a_bad_webhook_url_writes_nothing(sessions: sessionmaker[Session]) -> None:
    registry = ClientRegistry(sessions)
    with pytest.raises(InvalidClientMetadata) as refused:
        registry.register(name="Shop", redirect_uris=["https://shop.example/cb"], auth_method="client_secret_basic",
                          scopes=["openid"], webhook_url="http://shop.example/hooks", now=NOW)
    assert refused.value.field == "webhook_url"
    assert registry.list() == []
    assert WebhookRegistry(sessions).urls() == {}


def test_changing_the_webhook_rotates_its_secret_and_removing_the_client_removes_it(world: World) -> None:
    rotated = world.webhooks.set(world.client_id, "https://shop.example/new-hooks", now=NOW)
    assert rotated is not None
    assert rotated != world.secret
    assert rotated.startswith("whsec_")
    assert len(base64.b64decode(rotated.removeprefix("whsec_"))) == 32
    assert world.webhooks.urls() == {world.client_id: "https://shop.example/new-hooks"}
    assert world.webhooks.set("no-such-client", "https://shop.example/h", now=NOW) is None
    assert ClientRegistry(world.sessions).remove(world.client_id)
    assert world.webhooks.urls() == {}


# --- the outbox: one event per request -------------------------------------------------------


def test_a_client_without_a_webhook_gets_no_row(world: World) -> None:
    assert world.webhooks.remove(world.client_id)
    assert not world.outbox.schedule(request_id="r" * 32, client_id=world.client_id, request_uri=REQUEST_URI, now=NOW)
    complete(world, now=NOW)  # completion without a row stores the results and announces nothing
    world.outbox.decline(request_id="q" * 32, client_id=world.client_id, now=NOW)
    assert rows(world) == []
    assert stored_results(world) == 1


def test_a_pushed_request_waits_as_expired_until_its_end(world: World) -> None:
    schedule(world)
    (row,) = rows(world)
    assert (row.event, row.status, row.due_at, row.request_uri) == ("expired", "pending", NOW + LIFETIME, REQUEST_URI)
    assert world.outbox.claim(now=NOW + LIFETIME - timedelta(seconds=1)) == []


def test_completion_turns_the_row_into_completed_due_now(world: World) -> None:
    schedule(world)
    complete(world, now=NOW + timedelta(minutes=1))
    (row,) = rows(world)
    assert (row.event, row.status, row.due_at) == ("completed", "pending", NOW + timedelta(minutes=1))
    assert row.documents == DOCUMENTS
    assert stored_results(world) == 1


def test_completion_after_the_request_expired_stores_nothing(world: World) -> None:
    schedule(world)
    with pytest.raises(RequestEnded) as ended:
        complete(world, now=NOW + LIFETIME)
    assert ended.value.event is WebhookEvent.EXPIRED
    assert stored_results(world) == 0
    assert rows(world)[0].event == "expired"


def test_completion_after_the_login_transaction_ended_stores_nothing(world: World) -> None:
    """The phone's approval was read in time, but assembling the documents outlasted the transaction."""
    schedule(world)
    deadline = NOW + timedelta(minutes=5)
    with pytest.raises(RequestEnded) as ended:
        SigningResults(world.sessions).save(
            request_id="r" * 32, client_id=world.client_id, now=deadline, device_id="device-1",
            person_id="person-1", results=[SignedResult(
                label="Lease contract", digest=hashlib.sha256(b"lease").digest(), signature_format="cades",
                cms=b"cms", signed_pdf=None, assertion="jws")],
            announce=lambda session: world.outbox.complete(session, request_id="r" * 32, client_id=world.client_id,
                                                           documents=DOCUMENTS, now=deadline, deadline=deadline),
        )
    assert ended.value.event is WebhookEvent.EXPIRED
    assert stored_results(world) == 0
    (row,) = rows(world)
    assert (row.event, row.status, row.due_at) == ("expired", "pending", NOW + LIFETIME)


def test_completion_after_a_decline_stores_nothing(world: World) -> None:
    schedule(world)
    world.outbox.decline(request_id="r" * 32, client_id=world.client_id, now=NOW + timedelta(seconds=5))
    with pytest.raises(RequestEnded) as ended:
        complete(world, now=NOW + timedelta(seconds=6))
    assert ended.value.event is WebhookEvent.DECLINED
    assert stored_results(world) == 0


def test_decline_after_completion_is_refused(world: World) -> None:
    schedule(world)
    complete(world, now=NOW + timedelta(seconds=5))
    with pytest.raises(RequestEnded) as ended:
        world.outbox.decline(request_id="r" * 32, client_id=world.client_id, now=NOW + timedelta(seconds=6))
    assert ended.value.event is WebhookEvent.COMPLETED


def test_completion_racing_the_expiry_claim_announces_exactly_one_event(world: World) -> None:
    """The phone's completion (its clock a second before the end) against a dispatcher claiming the
    expiry (its clock a second after): twenty rounds, exactly one winner each time."""
    for round_number in range(20):
        request_id = f"{round_number:032d}"
        schedule(world, request_id)
        barrier = threading.Barrier(2)
        outcome: dict[str, object] = {}

        def completion(request_id: str = request_id, outcome: dict[str, object] = outcome,
                       barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                complete(world, now=NOW + LIFETIME - timedelta(seconds=1), request_id=request_id)
                outcome["completed"] = True
            except RequestEnded as ended:
                outcome["completed"] = ended.event

        def expiry(outcome: dict[str, object] = outcome, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            outcome["claimed"] = world.outbox.claim(now=NOW + LIFETIME + timedelta(seconds=1))

        threads = [threading.Thread(target=completion), threading.Thread(target=expiry)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        with world.sessions() as session:
            row = session.scalars(select(WebhookDelivery).where(WebhookDelivery.request_id == request_id)).one()
            results = session.scalar(select(func.count()).select_from(SignatureResult)
                                     .where(SignatureResult.request_id == request_id))
        claimed = outcome["claimed"]
        assert isinstance(claimed, list)
        if outcome["completed"] is True:  # completion won: the claim found it completed, due now, or nothing
            assert row.event == "completed"
            assert results == 1
            assert all(item.event is WebhookEvent.COMPLETED for item in claimed)
        else:
            assert outcome["completed"] is WebhookEvent.EXPIRED
            assert (row.event, results) == ("expired", 0)
            assert [item.event for item in claimed] == [WebhookEvent.EXPIRED]
        with world.sessions.begin() as session:  # the next round claims only its own row
            session.execute(WebhookDelivery.__table__.update().values(status="delivered"))


# --- delivery: signed, retried, given up -----------------------------------------------------


def test_completed_event_is_signed_so_that_standard_webhooks_verifies_it(
    world: World, clock: FixedClock, receiver: Receiver, on_portal_time: None,
) -> None:
    schedule(world)
    complete(world, now=NOW + timedelta(seconds=30))
    clock.advance(timedelta(seconds=31))
    tally = dispatcher(world, clock).run_once()
    assert (tally.delivered, tally.retrying, tally.failed) == (1, 0, 0)
    (message,) = receiver.received
    body = verified(world, message)
    assert body == {
        "type": "signing.completed", "request_uri": REQUEST_URI, "client_id": world.client_id,
        "occurred_at": "2026-06-01T03:00:30Z", "documents": DOCUMENTS,
    }
    assert message.headers["webhook-id"] == rows(world)[0].delivery_id
    assert message.headers["webhook-timestamp"] == str(int(clock.now().timestamp()))
    assert message.headers["Content-Type"] == "application/json"
    assert rows(world)[0].status == "delivered"
    assert dispatcher(world, clock).run_once().delivered == 0  # delivered once; no expiry follows
    clock.advance(LIFETIME)
    assert dispatcher(world, clock).run_once().delivered == 0
    assert len(receiver.received) == 1


def test_expired_event_is_sent_at_the_requests_end(
    world: World, clock: FixedClock, receiver: Receiver, on_portal_time: None,
) -> None:
    schedule(world)
    clock.advance(LIFETIME - timedelta(seconds=1))
    assert dispatcher(world, clock).run_once().delivered == 0
    clock.advance(timedelta(seconds=1))
    assert dispatcher(world, clock).run_once().delivered == 1
    assert verified(world, receiver.received[0]) == {
        "type": "signing.expired", "request_uri": REQUEST_URI, "client_id": world.client_id,
        "occurred_at": "2026-06-01T03:06:00Z",
    }


def test_declined_event_names_no_documents(
    world: World, clock: FixedClock, receiver: Receiver, on_portal_time: None,
) -> None:
    schedule(world)
    world.outbox.decline(request_id="r" * 32, client_id=world.client_id, now=NOW)
    assert dispatcher(world, clock).run_once().delivered == 1
    body = verified(world, receiver.received[0])
    assert body["type"] == "signing.declined"
    assert "documents" not in body


@pytest.mark.parametrize("tamper", [
    lambda m: Received(headers=m.headers, body=m.body.replace(b"completed", b"declined")),
    lambda m: Received(headers={**m.headers, "webhook-id": "msg_other"}, body=m.body),
    lambda m: Received(headers={**m.headers, "webhook-timestamp": str(int(m.headers["webhook-timestamp"]) + 1)},
                       body=m.body),
], ids=["body", "id", "timestamp"])
def test_tampered_message_is_refused_by_the_verifier(
    world: World, clock: FixedClock, receiver: Receiver, on_portal_time: None, tamper: object,
) -> None:
    schedule(world)
    complete(world, now=NOW)
    dispatcher(world, clock).run_once()
    (message,) = receiver.received
    verified(world, message)
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        verified(world, tamper(message))  # type: ignore[operator]


def test_message_verified_with_another_clients_secret_is_refused(
    world: World, clock: FixedClock, receiver: Receiver, on_portal_time: None,
) -> None:
    schedule(world)
    complete(world, now=NOW)
    dispatcher(world, clock).run_once()
    rotated = world.webhooks.set(world.client_id, receiver.url, now=NOW)
    assert rotated is not None
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        Webhook(rotated).verify(receiver.received[0].body, receiver.received[0].headers)


def test_failing_receiver_is_retried_with_back_off_then_marked_failed(
    world: World, clock: FixedClock, receiver: Receiver,
) -> None:
    receiver.status = 503
    schedule(world)
    complete(world, now=NOW)
    run = dispatcher(world, clock)
    retrying = _counted("retrying")
    for attempt, delay in enumerate(RETRY_DELAYS, start=1):
        tally = run.run_once()
        assert tally.retrying == 1, attempt
        (row,) = rows(world)
        assert (row.status, row.attempts, row.last_error) == ("pending", attempt, "http 503")
        assert row.due_at == clock.now() + delay
        clock.advance(delay - timedelta(seconds=1))
        assert run.run_once().retrying == 0  # not due yet
        clock.advance(timedelta(seconds=1))
    assert run.run_once().failed == 1
    assert _counted("retrying") == retrying + len(RETRY_DELAYS)
    (row,) = rows(world)
    assert (row.status, row.attempts, row.last_error) == ("failed", 6, "http 503")
    assert len(receiver.received) == 6
    assert len({message.headers["webhook-id"] for message in receiver.received}) == 1  # one id across retries
    assert len({message.body for message in receiver.received}) == 1
    clock.advance(timedelta(days=1))
    assert run.run_once().failed == 0
    assert len(receiver.received) == 6


def test_failed_delivery_is_listed_and_an_operator_can_retry_it(
    world: World, clock: FixedClock, receiver: Receiver,
) -> None:
    receiver.status = 500
    schedule(world)
    complete(world, now=NOW)
    run = dispatcher(world, clock)
    for delay in (*RETRY_DELAYS, timedelta(0)):
        run.run_once()
        clock.advance(delay)
    (listed,) = world.outbox.undelivered()
    assert (listed["status"], listed["attempts"], listed["type"]) == ("failed", 6, "signing.completed")
    receiver.status = 200
    assert world.outbox.requeue(listed["delivery_id"], now=clock.now())
    assert not world.outbox.requeue(listed["delivery_id"], now=clock.now())  # no longer failed
    assert run.run_once().delivered == 1
    assert world.outbox.undelivered() == []


@pytest.mark.parametrize(("status", "location"), [(302, "https://elsewhere.example/"), (400, None), (500, None)])
def test_a_non_2xx_answer_is_not_delivered_and_a_redirect_is_not_followed(
    world: World, clock: FixedClock, receiver: Receiver, status: int, location: str | None,
) -> None:
    receiver.status, receiver.location = status, location
    schedule(world)
    complete(world, now=NOW)
    assert dispatcher(world, clock).run_once().retrying == 1
    assert rows(world)[0].last_error == f"http {status}"
    assert len(receiver.received) == 1


def test_a_slow_receiver_times_out(world: World, clock: FixedClock, receiver: Receiver) -> None:
    receiver.delay = 1.5
    schedule(world)
    complete(world, now=NOW)
    assert dispatcher(world, clock, sender=HttpSender(timeout=timedelta(seconds=0.5))).run_once().retrying == 1
    assert rows(world)[0].last_error == "timeout"


@pytest.fixture
def dripping() -> Iterator[str]:
    """A receiver that reads the POST, then sends its status line and an endless header one byte
    every 50 ms: each read is quick, so only a deadline on the whole attempt ends it. Its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        connection, _ = listener.accept()
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            for byte in itertools.chain(b"HTTP/1.1 204 No Content\r\nX-Drip: ", itertools.repeat(ord("a"))):
                try:
                    connection.sendall(bytes([byte]))
                except OSError:  # the sender gave up and closed
                    return
                if stop.wait(0.05):
                    return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/hooks/myna"
    stop.set()
    listener.close()
    thread.join(timeout=5)


def test_a_receiver_dripping_its_headers_is_cut_off_at_the_deadline(dripping: str) -> None:
    sender = HttpSender(timeout=timedelta(seconds=1))
    started = time.monotonic()
    result = sender.send(Message(url=dripping, body=b"{}", headers={}))
    assert time.monotonic() - started < 2.5  # the 1 s deadline, and slack for a busy machine
    assert (result.status, result.error) == (None, "timeout")


def test_a_dripping_receiver_is_recorded_as_a_timeout_and_retried(
    world: World, clock: FixedClock, dripping: str,
) -> None:
    world.webhooks.set(world.client_id, dripping, now=NOW)
    schedule(world)
    complete(world, now=NOW)
    assert dispatcher(world, clock, sender=HttpSender(timeout=timedelta(seconds=1))).run_once().retrying == 1
    assert (rows(world)[0].status, rows(world)[0].last_error) == ("pending", "timeout")


@pytest.mark.parametrize("timeout", [LEASE, LEASE * 2, timedelta(0)], ids=["lease", "over-lease", "zero"])
def test_an_attempt_may_not_outlast_the_claims_lease(timeout: timedelta) -> None:
    with pytest.raises(ValueError, match="shorter than the claim's lease"):
        HttpSender(timeout=timeout)


def test_delivered_rows_are_deleted_after_the_retention(world: World, clock: FixedClock, receiver: Receiver) -> None:
    schedule(world, "a" * 32)
    complete(world, now=NOW, request_id="a" * 32)
    assert dispatcher(world, clock).run_once().delivered == 1
    schedule(world, "b" * 32)  # still waiting for its end: never deleted, however old
    world.webhooks.set(world.client_id, "http://127.0.0.1:9/unreachable", now=NOW)
    schedule(world, "c" * 32)
    complete(world, now=NOW, request_id="c" * 32)
    assert dispatcher(world, clock).run_once().retrying == 1  # "c" is pending a retry

    clock.advance(DELIVERED_RETENTION)
    assert dispatcher(world, clock).run_once().purged == 0  # exactly the retention: kept
    clock.advance(timedelta(seconds=1))
    tally = dispatcher(world, clock).run_once()

    assert tally.purged == 1
    assert sorted(row.request_id for row in rows(world)) == ["b" * 32, "c" * 32]


def test_an_unreachable_receiver_is_retried(world: World, clock: FixedClock, receiver: Receiver) -> None:
    world.webhooks.set(world.client_id, "http://127.0.0.1:9/unreachable", now=NOW)
    schedule(world)
    complete(world, now=NOW)
    assert dispatcher(world, clock).run_once().retrying == 1
    assert rows(world)[0].last_error == "connection"


def test_a_removed_webhook_fails_the_delivery_without_posting(
    world: World, clock: FixedClock, receiver: Receiver,
) -> None:
    schedule(world)
    complete(world, now=NOW)
    world.webhooks.remove(world.client_id)
    before = _counted("failed")
    assert dispatcher(world, clock).run_once().failed == 1
    assert _counted("failed") == before + 1
    assert (rows(world)[0].status, rows(world)[0].last_error) == ("failed", "no_webhook")
    assert receiver.received == []


def _counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("myna_webhook_deliveries_total", {"outcome": outcome}) or 0.0


def test_a_claim_whose_lease_ran_out_is_taken_again(world: World, clock: FixedClock) -> None:
    schedule(world)
    complete(world, now=NOW)
    (first,) = world.outbox.claim(now=NOW)
    assert world.outbox.claim(now=NOW + timedelta(seconds=59)) == []
    (second,) = world.outbox.claim(now=NOW + timedelta(seconds=60))
    assert (second.delivery_id, second.attempt) == (first.delivery_id, 2)
    assert not world.outbox.delivered(first, now=NOW + timedelta(seconds=61))  # the first claim is lost
    assert world.outbox.delivered(second, now=NOW + timedelta(seconds=61))
    assert rows(world)[0].status == DeliveryStatus.DELIVERED


def test_jitter_adds_up_to_a_fifth() -> None:
    for delay in RETRY_DELAYS:
        waits = {jittered(delay) for _ in range(50)}
        assert all(delay <= wait <= delay * 1.2 for wait in waits)
        assert len(waits) > 1


# --- the command line -------------------------------------------------------------------------


def _run(*args: object) -> object:
    cleared = {"IDP_CONFIG": None, "DATABASE_URL": None, "REDIS_URL": None}
    return CliRunner(env=cleared).invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def test_cli_sets_lists_rotates_and_removes_a_webhook_and_delivers(tmp_path: Path, receiver: Receiver) -> None:
    instance = tmp_path / "instance"
    assert _run("init", "--instance", instance).exit_code == 0  # type: ignore[attr-defined]
    added = _run("clients", "add", "--instance", instance, "--name", "Shop", "--redirect-uri",
                 "https://shop.example/cb", "--webhook-url", receiver.url, "--json")
    document = json.loads(added.stdout)  # type: ignore[attr-defined]
    client_id, secret = document["client_id"], document["webhook_secret"]
    assert secret.startswith("whsec_")
    listed = _run("clients", "list", "--instance", instance)
    assert listed.stdout.rstrip("\n").endswith(f"\twebhook {receiver.url}")  # type: ignore[attr-defined]
    assert secret not in listed.stdout  # type: ignore[attr-defined]
    (as_json,) = json.loads(_run("clients", "list", "--instance", instance, "--json").stdout)  # type: ignore[attr-defined]
    assert as_json["webhook_url"] == receiver.url
    assert "webhook_secret" not in as_json

    rotated = _run("clients", "webhook", client_id, "--instance", instance, "--url", receiver.url)
    new_secret = rotated.stdout.split("webhook_secret: ")[1].strip()  # type: ignore[attr-defined]
    assert new_secret.startswith("whsec_")
    assert new_secret != secret

    engine = make_engine(f"sqlite:///{instance / 'idp.sqlite3'}")
    try:
        sessions = make_session_factory(engine)
        outbox = WebhookOutbox(sessions, request_lifetime=LIFETIME)
        now = datetime.now(UTC)
        assert outbox.schedule(request_id="r" * 32, client_id=client_id, request_uri=REQUEST_URI, now=now)
        outbox.decline(request_id="r" * 32, client_id=client_id, now=now)
        pending = _run("webhooks", "list", "--instance", instance, "--json")
        assert [row["status"] for row in json.loads(pending.stdout)] == ["pending"]  # type: ignore[attr-defined]
        ran = _run("webhooks", "run", "--once", "--instance", instance)
        assert ran.stdout.strip() == "delivered 1, retrying 0, failed 0"  # type: ignore[attr-defined]
        assert Webhook(new_secret).verify(receiver.received[0].body, receiver.received[0].headers)["type"] == (
            "signing.declined"
        )
        assert _run("webhooks", "list", "--instance", instance).stdout.strip() == (  # type: ignore[attr-defined]
            "nothing pending or failed"
        )
        refused = CliRunner(env={"IDP_CONFIG": None}).invoke(main, ["webhooks", "retry", "msg_none", "--instance",
                                                                    str(instance)])
        assert refused.exit_code == 1
        assert "no failed delivery 'msg_none'" in refused.output
    finally:
        engine.dispose()

    removed = _run("clients", "webhook", client_id, "--instance", instance, "--remove")
    assert removed.stdout.strip() == f"removed the webhook of client {client_id}"  # type: ignore[attr-defined]
    assert "webhook" not in _run("clients", "list", "--instance", instance).stdout  # type: ignore[attr-defined]


@pytest.mark.parametrize(("args", "message"), [
    (["--url", "http://shop.example/hooks"], "must use https"),
    ([], "give --url URL or --remove"),
    (["--remove", "--url", "https://shop.example/h"], "give --url URL or --remove"),
])
def test_cli_webhook_command_refuses_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    instance = tmp_path / "instance"
    assert _run("init", "--instance", instance).exit_code == 0  # type: ignore[attr-defined]
    added = _run("clients", "add", "--instance", instance, "--name", "Shop", "--redirect-uri",
                 "https://shop.example/cb", "--json")
    client_id = json.loads(added.stdout)["client_id"]  # type: ignore[attr-defined]
    result = CliRunner(env={"IDP_CONFIG": None}).invoke(
        main, ["clients", "webhook", client_id, "--instance", str(instance), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "webhook" not in _run("clients", "list", "--instance", instance).stdout  # type: ignore[attr-defined]


def test_cli_webhook_command_names_an_unknown_client_or_a_missing_webhook(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    assert _run("init", "--instance", instance).exit_code == 0  # type: ignore[attr-defined]
    runner = CliRunner(env={"IDP_CONFIG": None, "DATABASE_URL": None, "REDIS_URL": None})
    unknown = runner.invoke(main, ["clients", "webhook", "nosuchclient", "--instance", str(instance),
                                   "--url", "https://shop.example/h"])
    assert unknown.exit_code == 1
    assert "no client 'nosuchclient' is registered" in unknown.output
    none = runner.invoke(main, ["clients", "webhook", "nosuchclient", "--instance", str(instance), "--remove"])
    assert none.exit_code == 1
    assert "client 'nosuchclient' has no webhook" in none.output
