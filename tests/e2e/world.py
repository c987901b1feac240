"""The end-to-end world: the simulated J-LIS, the portal under real gunicorn, enrolled phones, the demo RP.

Everything talks over real HTTP on loopback ports. The J-LIS and the demo RP are werkzeug servers in
threads of the calling process; the portal is ``idp serve`` (gunicorn) in a subprocess on Redis and a
PostgreSQL database of its own, set up as an operator would with ``idp init``, ``idp clients add`` and
``idp pki sync-revocations``. A simulated phone enrolls with a simulated card through the device API.

Shared by ``tests/e2e/test_login_*.py`` and ``bench/login.py`` (which puts this directory on its path).
No test functions here.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

from idp.pki.attributes import BasicAttributes, Sex
from relying_party_demo.app import RpConfig
from relying_party_demo.app import create_app as create_rp_app
from smartphone.jlis_server import create_jlis_app
from smartphone.portal_client import Enrollment, PortalClient, approve, enroll
from smartphone.state import State

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PASSPHRASE = b"e2e login passphrase"
AUTH_PIN = "1234"
SIGN_PIN = "TARO2024"
TARO = BasicAttributes(
    name="山田　太郎", address="東京都千代田区永田町1-7-1", date_of_birth=date(1990, 4, 1), sex=Sex.MALE,
)
RP_SCOPES = ("openid", "name", "address", "birthdate", "gender")
VENDOR = "MynaDevices"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LateApp:
    """A WSGI app set after its server is bound, so that its URL can go into its own configuration."""

    app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None, "the server was called before its app was set"
        return self.app(environ, start_response)


@contextmanager
def serving(app: Callable[..., Any]) -> Iterator[str]:
    """``app`` on a loopback port (werkzeug, a thread per request) until the block ends."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


# --- the simulated J-LIS, cards and phones ------------------------------------------------------


@dataclass
class Simulation:
    """The simulated J-LIS (served in a thread) and the cards and phones in ``state``."""

    state: State
    jlis_url: str

    @property
    def vendor_root(self) -> Path:
        return self.state.root / "vendors" / VENDOR / "root.crt"

    def portal_pki_env(self) -> dict[str, str]:
        """The portal settings that trust this J-LIS and this SE vendor, as environment variables."""
        jlis = self.state.jlis_dir
        return {
            "IDP_PKI__JLIS_ROOTS": str(jlis / "jlis-root.crt"),
            "IDP_PKI__JLIS_INTERMEDIATES": f"{jlis / 'jlis-auth-ca.crt'},{jlis / 'jlis-sign-ca.crt'}",
            "IDP_PKI__JLIS_CRL_URLS": f"{self.jlis_url}/crl/jlis-auth-ca.crl,{self.jlis_url}/crl/jlis-sign-ca.crl",
            "IDP_PKI__ATTESTATION_ROOTS": str(self.vendor_root),
        }

    def issue_card(self, name: str, attributes: BasicAttributes = TARO) -> None:
        card = self.state.load_jlis().issue_card(
            attributes=attributes, prefecture="東京都", city="千代田区", auth_pin=AUTH_PIN, sign_pin=SIGN_PIN,
            now=datetime.now(UTC) - timedelta(hours=1),
        )
        self.state.add_card(name, card)

    def add_phone(self, name: str) -> None:
        vendor = self.state.vendor(VENDOR, model=None, now=datetime.now(UTC) - timedelta(days=1))
        self.state.add_phone(name, vendor=vendor)


@contextmanager
def simulated_jlis(directory: Path) -> Iterator[Simulation]:
    """A fresh J-LIS and SE vendor in ``directory``, the J-LIS served on a loopback port; cards and phones
    are added on demand."""
    late = LateApp()
    with serving(late) as jlis_url:
        state = State(directory, PASSPHRASE)
        state.create_jlis(base_url=jlis_url, now=datetime.now(UTC) - timedelta(days=2))
        late.app = create_jlis_app(directory, passphrase=PASSPHRASE)
        state.vendor(VENDOR, model=None, now=datetime.now(UTC) - timedelta(days=1))  # the portal trusts its root
        yield Simulation(state=state, jlis_url=jlis_url)


# --- stores -------------------------------------------------------------------------------------


@contextmanager
def fresh_database(admin_url: str, prefix: str = "e2e") -> Iterator[str]:
    """A new PostgreSQL database next to ``admin_url``'s, dropped (connections and all) afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


# --- the portal under gunicorn ------------------------------------------------------------------


@dataclass
class RegisteredClient:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    name: str


@dataclass
class PortalInstance:
    """An initialised portal instance and the environment every ``idp`` command of it runs with."""

    url: str
    port: int
    directory: Path
    env: dict[str, str]

    def idp(self, *args: str, timeout: float = 60) -> str:
        """Run ``idp ARGS`` as a subprocess; its stdout. Fails with its output when it exits non-zero."""
        done = subprocess.run([str(BIN / "idp"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"idp {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def add_client(self, name: str, redirect_uris: list[str], scopes: tuple[str, ...] = RP_SCOPES) -> RegisteredClient:
        args = ["clients", "add", "--name", name, "--json"]
        for uri in redirect_uris:
            args += ["--redirect-uri", uri]
        for scope in scopes:
            args += ["--scope", scope]
        document = json.loads(self.idp(*args))
        return RegisteredClient(client_id=document["client_id"], client_secret=document["client_secret"],
                                redirect_uris=document["redirect_uris"], name=document["client_name"])

    def sync_revocations(self) -> str:
        return self.idp("pki", "sync-revocations")

    @contextmanager
    def serving(self, workers: int = 2) -> Iterator[Gunicorn]:
        """``idp serve`` under gunicorn until the block ends; stopped (and if need be killed) always."""
        log = (self.directory / "gunicorn.log").open("wb")
        process = subprocess.Popen(
            [str(BIN / "idp"), "serve", "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        server = Gunicorn(url=self.url, process=process, log=self.directory / "gunicorn.log")
        try:
            server.wait_ready(workers)
            yield server
        finally:
            server.stop()
            log.close()


def initialised_portal(sim: Simulation, directory: Path, *, database_url: str, redis_url: str) -> PortalInstance:
    """``idp init`` of a portal that trusts ``sim``, on a free port (its issuer URL), Redis and PostgreSQL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    directory.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("IDP_", "SMARTPHONE_"))}
    env |= {
        "IDP_ISSUER": url, "IDP_INSTANCE": str(directory / "instance"), "DATABASE_URL": database_url,
        "REDIS_URL": redis_url, "IDP_REDIS_PREFIX": f"test:{secrets.token_hex(8)}:", "PYTHONUNBUFFERED": "1",
        **sim.portal_pki_env(),
    }
    env.pop("IDP_CONFIG", None)
    portal = PortalInstance(url=url, port=port, directory=directory, env=env)
    portal.idp("init")
    return portal


@dataclass
class Gunicorn:
    """The running ``idp serve`` process: its master (the subprocess) and its workers."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def workers(self) -> list[int]:
        found = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False)
        return [int(pid) for pid in found.stdout.split()]

    def wait_ready(self, workers: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"idp serve exited {self.process.returncode}:\n{self.log_tail()}")
            try:
                answer = requests.get(f"{self.url}/.well-known/openid-configuration", timeout=2)
            except requests.RequestException:
                answer = None
            if answer is not None and answer.status_code == 200 and len(self.workers()) >= workers:
                return
            time.sleep(0.1)
        raise RuntimeError(f"idp serve did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the master (gunicorn stops its workers), then SIGKILL to its process group if need be."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        with suppress(ProcessLookupError):  # a worker that outlived its master; the group is ours
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def cpu_seconds(self) -> float:
        """utime + stime of the master and its live workers, plus what the master reaped from dead ones.

        ``/proc/<pid>/stat`` of a process sums all its threads (``/proc/<pid>/task/*``), live and exited.
        """
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in [self.process.pid, *self.workers()]:
            fields = _stat_fields(pid)
            if fields is None:
                continue
            utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
            total += utime + stime + (cutime + cstime if pid == self.process.pid else 0)
        return total / tick

    def rss_kib(self) -> dict[int, int]:
        """Resident set size of the master and of each worker, in KiB."""
        sizes = {}
        for pid in [self.process.pid, *self.workers()]:
            try:
                status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
            except OSError:
                continue
            found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
            if found:
                sizes[pid] = int(found.group(1))
        return sizes


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name: state is [0], utime [11], stime [12]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


# --- phones -------------------------------------------------------------------------------------


@dataclass
class Phone:
    """A simulated phone enrolled at the portal: its SE, its enrollment, its keep-alive device API client."""

    client: PortalClient
    element: Any
    enrollment: Enrollment
    name: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def lookup(self, qr_payload: str) -> dict[str, Any]:
        return self.client.lookup_transaction(qr=qr_payload)

    def approve(self, transaction: dict[str, Any]) -> dict[str, Any]:
        with self.lock:  # the SE's signature counter serialises its approvals
            return approve(client=self.client, element=self.element, enrollment=self.enrollment,
                           transaction=transaction)


def enrolled_phone(sim: Simulation, portal_url: str, *, phone: str, card: str) -> Phone:
    """Phone ``phone`` with card ``card`` (both made here) enrolled at ``portal_url`` over the device API."""
    sim.issue_card(card)
    sim.add_phone(phone)
    element, my_number_card = sim.state.load_phone(phone), sim.state.load_card(card)
    client = PortalClient(portal_url)
    enrollment = enroll(client=client, element=element, card=my_number_card, auth_pin=AUTH_PIN, sign_pin=SIGN_PIN)
    return Phone(client=client, element=element, enrollment=enrollment, name=phone)


def qr_payload(login_page: str) -> str:
    found = re.search(r'<img id="qr"[^>]*data-payload="([^"]+)"', login_page)
    assert found, "the login page has no QR payload"
    return found.group(1)


def element_text(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', page)
    assert found, f"the page has no #{element_id}"
    return found.group(1)


# --- the whole world ----------------------------------------------------------------------------


@dataclass
class World:
    """J-LIS, the portal under gunicorn, an enrolled phone ``pixel`` (card ``taro``) and the demo RP."""

    sim: Simulation
    portal: PortalInstance
    server: Gunicorn
    phone: Phone
    rp_url: str
    rp_client: RegisteredClient


@contextmanager
def login_world(directory: Path, *, admin_database_url: str, redis_url: str, workers: int = 2) -> Iterator[World]:
    """Everything the login end-to-end tests need, torn down in reverse order whatever happens."""
    rp = LateApp()
    with (
        simulated_jlis(directory / "sim") as sim,
        fresh_database(admin_database_url) as database_url,
        serving(rp) as rp_url,
    ):
        portal = initialised_portal(sim, directory / "portal", database_url=database_url, redis_url=redis_url)
        rp_client = portal.add_client("Demo Shop", [f"{rp_url}/callback"], scopes=(*RP_SCOPES, "sign"))  # it signs too
        portal.sync_revocations()
        with portal.serving(workers=workers) as server:
            rp.app = create_rp_app(RpConfig(issuer=portal.url, client_id=rp_client.client_id,
                                            client_secret=rp_client.client_secret))
            phone = enrolled_phone(sim, portal.url, phone="pixel", card="taro")
            yield World(sim=sim, portal=portal, server=server, phone=phone, rp_url=rp_url, rp_client=rp_client)
