"""When PostgreSQL or Redis fails in the middle of ceremonies: 503s, clean failure, recovery without restart.

The portal runs under gunicorn (2 workers) with ``DATABASE_URL`` and ``REDIS_URL`` pointed at TCP
proxies (``tcp_proxy.py``) in front of the test servers. A test cuts one proxy (every open
connection reset, new ones refused) while a login is in flight, checks what the phone, the
browser and the RP are told, restores the proxy and checks that the same portal processes serve
new ceremonies again and that every durable record written before the fault is intact.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import redis
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy import create_engine, text
from tcp_proxy import TcpProxy, proxied_url
from world import (
    AUTH_PIN,
    SIGN_PIN,
    Phone,
    RegisteredClient,
    Simulation,
    enrolled_phone,
    free_port,
    fresh_database,
    initialised_portal,
    qr_payload,
    simulated_jlis,
)

from smartphone.portal_client import PortalClient, PortalError, enroll

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SERVICE_UNAVAILABLE = "https://id.myna.example/problems/service-unavailable"
CALLBACK = "https://shop.example/callback"


@dataclass
class OutageWorld:
    sim: Simulation
    url: str
    client: RegisteredClient
    phone: Phone
    database: TcpProxy
    redis: TcpProxy
    durable: Callable[[str], list[tuple]]
    """Runs a query on the portal's database directly, not through the proxy."""
    log: Path

    def log_since(self, offset: int) -> str:
        """What gunicorn (master and workers) logged after ``offset`` bytes."""
        return self.log.read_bytes()[offset:].decode("utf-8", errors="replace")

    def log_size(self) -> int:
        return self.log.stat().st_size


@pytest.fixture(scope="module")
def world(tmp_path_factory, postgres_url, redis_url):
    directory = tmp_path_factory.mktemp("outage")
    with (
        simulated_jlis(directory / "sim") as sim,
        fresh_database(postgres_url, prefix="outage") as database_url,
        TcpProxy.to_url(database_url) as database,
        TcpProxy.to_url(redis_url) as ephemeral,
    ):
        portal = initialised_portal(sim, directory / "portal", database_url=proxied_url(database_url, database.port),
                                    redis_url=proxied_url(redis_url, ephemeral.port))
        client = portal.add_client("Outage Shop", [CALLBACK], scopes=("openid", "name"))
        portal.sync_revocations()
        engine = create_engine(database_url)

        def durable(query: str) -> list[tuple]:
            with engine.connect() as connection:
                return [tuple(row) for row in connection.execute(text(query))]

        try:
            with portal.serving(workers=2) as server:
                phone = enrolled_phone(sim, portal.url, phone="pixel", card="taro")
                yield OutageWorld(sim=sim, url=portal.url, client=client, phone=phone, database=database,
                                  redis=ephemeral, durable=durable, log=server.log)
        finally:
            engine.dispose()


# --- a login as a browser, a phone and an RP do it ---------------------------------------------


@dataclass
class Login:
    browser: requests.Session
    page: requests.Response
    verifier: str
    state: str

    def page_url(self, leaf: str) -> str:
        """``/login/<id>/<leaf>`` of this login's page, absolute."""
        return self.page.url.split("/authorize")[0] + self.url("data-status-url").replace("/status", f"/{leaf}")

    def url(self, attribute: str) -> str:
        text_ = self.page.text
        start = text_.index(f'{attribute}="') + len(attribute) + 2
        return text_[start:text_.index('"', start)]


def authorize(world: OutageWorld, browser: requests.Session | None = None, **headers: str) -> Login:
    browser = browser or requests.Session()
    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(12)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({
        "client_id": world.client.client_id, "redirect_uri": CALLBACK, "response_type": "code",
        "scope": "openid name", "state": state, "nonce": secrets.token_urlsafe(12),
        "code_challenge": challenge, "code_challenge_method": "S256",
    })
    page = browser.get(f"{world.url}/authorize?{query}", headers=headers, timeout=20)
    return Login(browser=browser, page=page, verifier=verifier, state=state)


def push(world: OutageWorld) -> requests.Response:
    """A valid pushed authorization request (RFC 9126)."""
    return requests.post(world.url + "/par", auth=(world.client.client_id, world.client.client_secret), timeout=20,
                         data={"response_type": "code", "redirect_uri": CALLBACK, "scope": "openid",
                               "nonce": "n-0S6_WzA2Mj", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                               "code_challenge_method": "S256"})


def code_of(world: OutageWorld, login: Login) -> str:
    back = login.browser.get(world.url + login.url("data-continue-url"), allow_redirects=False, timeout=20)
    assert back.status_code in {302, 303}, back.text
    query = parse_qs(urlsplit(back.headers["Location"]).query)
    assert query["state"] == [login.state]
    return query["code"][0]


def token(world: OutageWorld, **form: str) -> requests.Response:
    return requests.post(world.url + "/token", data=form, timeout=20,
                         auth=(world.client.client_id, world.client.client_secret))


def redeem(world: OutageWorld, login: Login, code: str) -> requests.Response:
    return token(world, grant_type="authorization_code", code=code, redirect_uri=CALLBACK,
                 code_verifier=login.verifier)


def full_login(world: OutageWorld) -> dict:
    login = authorize(world)
    assert login.page.status_code == 200, login.page.text
    assert world.phone.approve(world.phone.lookup(qr_payload(login.page.text))) == {"status": "approved"}
    tokens = redeem(world, login, code_of(world, login))
    assert tokens.status_code == 200, tokens.text
    return tokens.json()


def userinfo(world: OutageWorld, access_token: str) -> requests.Response:
    return requests.get(world.url + "/userinfo", headers={"Authorization": f"Bearer {access_token}"}, timeout=20)


def every_worker_answers(call: Callable[[], requests.Response], *, ok: int = 200, times: int = 6) -> requests.Response:
    """``call`` answered ``ok`` ``times`` times in a row: by every worker, each of whose pooled
    connections died with the server (no restart, no request lost to a dead connection)."""
    for _ in range(times):
        answer = call()
        assert answer.status_code == ok, answer.text
    return answer


def assert_unavailable_json(answer: requests.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "5"
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["error"] == "temporarily_unavailable"


def assert_unavailable_page(answer: requests.Response, words: str) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "5"
    assert answer.headers["Content-Type"].startswith("text/html")
    assert '<code id="error">temporarily_unavailable</code>' in answer.text
    assert words in answer.text
    assert "Traceback" not in answer.text


def assert_unavailable_problem(error: PortalError) -> None:
    assert (error.status, error.type) == (503, SERVICE_UNAVAILABLE)


def ocsp_request(certificate: x509.Certificate, issuer: x509.Certificate) -> bytes:
    built = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA256()).build()
    return built.public_bytes(serialization.Encoding.DER)


# --- Redis -------------------------------------------------------------------------------------


def test_redis_outage_fails_the_login_in_flight_cleanly_and_ceremonies_work_again_after(world):
    before = full_login(world)
    grants_before = world.durable("SELECT grant_id, revoked_at FROM oidc_grants ORDER BY grant_id")
    devices_before = world.durable("SELECT id, status, revoked_at FROM devices ORDER BY id")
    in_flight = authorize(world)
    transaction = world.phone.lookup(qr_payload(in_flight.page.text))
    log_offset = world.log_size()

    world.redis.cut()
    try:
        with pytest.raises(PortalError) as refused:  # the phone is told
            world.phone.approve(transaction)
        assert_unavailable_problem(refused.value)
        with pytest.raises(PortalError) as scan:
            world.phone.lookup(qr_payload(in_flight.page.text))
        assert_unavailable_problem(scan.value)
        assert_unavailable_json(in_flight.browser.get(in_flight.page_url("qr.svg"), timeout=20))
        status = in_flight.browser.get(world.url + in_flight.url("data-status-url"), timeout=20)
        assert_unavailable_json(status)  # the waiting page's poll
        assert_unavailable_page(  # the browser going on to the RP
            in_flight.browser.get(world.url + in_flight.url("data-continue-url"), timeout=20),
            "しばらくしてから",
        )
        assert_unavailable_page(authorize(world).page, "しばらくしてから")
        assert_unavailable_page(authorize(world, **{"Accept-Language": "en"}).page, "try again in a moment")
        assert_unavailable_json(token(world, grant_type="refresh_token", refresh_token=before["refresh_token"]))
        assert_unavailable_json(userinfo(world, before["access_token"]))
        assert_unavailable_json(push(world))
        with pytest.raises(PortalError) as enrollment:
            world.phone.client.start_enrollment()
        assert_unavailable_problem(enrollment.value)
        ready = requests.get(world.url + "/readyz", timeout=20)
        assert ready.status_code == 503
        assert ready.json()["checks"]["ephemeral_store"]["ok"] is False
        cancel = in_flight.browser.post(in_flight.page_url("cancel"), timeout=20, allow_redirects=False)
        assert_unavailable_page(cancel, "しばらくしてから")
    finally:
        world.redis.restore()
    logged = world.log_since(log_offset)
    assert "dependency.unavailable" in logged
    assert "ephemeral_store" in logged
    assert "Traceback" not in logged

    # The same gunicorn processes serve again: the in-flight login completes whole, the phone
    # approving again; the RP's refresh token and access token from before still work.
    assert world.durable("SELECT grant_id, revoked_at FROM oidc_grants ORDER BY grant_id") == grants_before
    assert world.durable("SELECT id, status, revoked_at FROM devices ORDER BY id") == devices_before
    assert every_worker_answers(lambda: requests.get(world.url + "/readyz", timeout=20)).json()["status"] == "ready"
    assert world.phone.approve(world.phone.lookup(qr_payload(in_flight.page.text))) == {"status": "approved"}
    finished = redeem(world, in_flight, code_of(world, in_flight))
    assert finished.status_code == 200, finished.text
    assert userinfo(world, before["access_token"]).json()["name"] == "山田　太郎"
    refreshed = token(world, grant_type="refresh_token", refresh_token=before["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert push(world).status_code == 201
    full_login(world)


@pytest.fixture
def empty_redis(tmp_path):
    """A Redis server of this test's own, on its own port: the Redis that comes back empty after a crash."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "this test starts a redis-server of its own: `apt-get install -y redis-server`"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    port = free_port()
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            assert time.monotonic() < deadline, "the test's own Redis did not start"
            time.sleep(0.05)
        yield ("127.0.0.1", port)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _answers(port: int) -> bool:
    client = redis.Redis(port=port, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def test_redis_that_comes_back_empty_ends_logins_in_flight_and_keeps_everything_durable(world, empty_redis):
    before = full_login(world)
    in_flight = authorize(world)
    transaction = world.phone.lookup(qr_payload(in_flight.page.text))
    original = world.redis.upstream

    world.redis.cut()
    world.redis.restore(upstream=empty_redis)  # Redis restarted without its data
    try:
        with pytest.raises(PortalError) as gone:  # the phone is told the login is gone
            world.phone.approve(transaction)
        assert (gone.value.status, gone.value.type) == (404, "https://id.myna.example/problems/transaction-not-found")
        assert in_flight.browser.get(world.url + in_flight.url("data-status-url"), timeout=20).json() == {
            "status": "expired"}
        back = in_flight.browser.get(world.url + in_flight.url("data-continue-url"), allow_redirects=False, timeout=20)
        assert back.status_code == 400  # never a code for it, now or later
        assert '<code id="error">invalid_request</code>' in back.text
        # Access tokens lived in Redis; the grant and its refresh token live in PostgreSQL.
        assert userinfo(world, before["access_token"]).status_code == 401
        refreshed = token(world, grant_type="refresh_token", refresh_token=before["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        assert userinfo(world, refreshed.json()["access_token"]).json()["name"] == "山田　太郎"
        full_login(world)
    finally:
        world.redis.cut()
        world.redis.restore(upstream=original)


# --- PostgreSQL --------------------------------------------------------------------------------


def test_postgres_outage_writes_nothing_half_and_the_pool_recovers_without_restart(world):
    before = full_login(world)
    tables = ("persons", "person_card_certificates", "devices", "pki_certificates", "pki_certificate_sources",
              "oidc_grants", "oidc_refresh_tokens", "oidc_consents")
    snapshot = {table: world.durable(f"SELECT * FROM {table} ORDER BY 1") for table in tables}  # noqa: S608 - fixed names
    in_flight = authorize(world)
    assert in_flight.page.status_code == 200
    transaction = world.phone.lookup(qr_payload(in_flight.page.text))
    world.sim.issue_card("hanako")
    world.sim.add_phone("spare")

    def enroll_spare() -> object:
        return enroll(client=PortalClient(world.url), element=world.sim.state.load_phone("spare"),
                      card=world.sim.state.load_card("hanako"), auth_pin=AUTH_PIN, sign_pin=SIGN_PIN)

    log_offset = world.log_size()

    world.database.cut()
    try:
        with pytest.raises(PortalError) as refused:  # the phone is told; its sign counter is not spent
            world.phone.approve(transaction)
        assert_unavailable_problem(refused.value)
        with pytest.raises(PortalError) as enrollment:  # started in Redis, refused at completion
            enroll_spare()
        assert_unavailable_problem(enrollment.value)
        assert_unavailable_json(token(world, grant_type="refresh_token", refresh_token=before["refresh_token"]))
        assert_unavailable_json(userinfo(world, before["access_token"]))
        phone_certificate = world.phone.enrollment.auth_certificate
        answer = requests.post(world.url + "/pki/ocsp", timeout=20,
                               data=ocsp_request(phone_certificate, world.phone.enrollment.chain[0]),
                               headers={"Content-Type": "application/ocsp-request"})
        assert answer.headers["Retry-After"] == "5"
        assert ocsp.load_der_ocsp_response(answer.content).response_status is ocsp.OCSPResponseStatus.TRY_LATER
        ready = requests.get(world.url + "/readyz", timeout=20)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"]["ok"] is False
    finally:
        world.database.restore()

    assert {table: world.durable(f"SELECT * FROM {table} ORDER BY 1") for table in tables} == snapshot  # noqa: S608
    # The first request of each worker after the outage finds its pooled connections closed and
    # replaces them at checkout (idp.ops.connections): none of these fails.
    every_worker_answers(lambda: userinfo(world, before["access_token"]))
    every_worker_answers(lambda: requests.get(world.url + "/readyz", timeout=20))
    assert world.phone.approve(world.phone.lookup(qr_payload(in_flight.page.text))) == {"status": "approved"}
    finished = redeem(world, in_flight, code_of(world, in_flight))
    assert finished.status_code == 200, finished.text
    refreshed = token(world, grant_type="refresh_token", refresh_token=before["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    full_login(world)
    enroll_spare()  # the card and the phone that could not enroll during the outage
    logged = world.log_since(log_offset)
    assert '"dependency": "database"' in logged or "dependency=database" in logged
    assert "Traceback" not in logged


def test_postgres_outage_as_the_browser_continues_gives_no_code_until_it_is_back_then_one(world):
    login = authorize(world)
    assert world.phone.approve(world.phone.lookup(qr_payload(login.page.text))) == {"status": "approved"}
    consents = world.durable("SELECT * FROM oidc_consents ORDER BY 1")

    world.database.cut()
    try:
        # The approval names the attribute `name`: its consent is recorded (PostgreSQL) before the code.
        stalled = login.browser.get(world.url + login.url("data-continue-url"), allow_redirects=False, timeout=20)
        assert_unavailable_page(stalled, "しばらくしてから")
        assert "Location" not in stalled.headers
    finally:
        world.database.restore()

    assert world.durable("SELECT * FROM oidc_consents ORDER BY 1") == consents
    back = login.browser.get(world.url + login.url("data-continue-url"), allow_redirects=False, timeout=20)
    assert back.status_code == 303, back.text
    code = parse_qs(urlsplit(back.headers["Location"]).query)["code"][0]
    tokens = redeem(world, login, code)
    assert tokens.status_code == 200, tokens.text
    assert userinfo(world, tokens.json()["access_token"]).json()["name"] == "山田　太郎"
    again = login.browser.get(world.url + login.url("data-continue-url"), allow_redirects=False, timeout=20)
    assert again.status_code == 400  # one approval, one code
    assert '<code id="error">invalid_request</code>' in again.text
