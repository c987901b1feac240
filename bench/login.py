"""Benchmark complete login ceremonies against the portal under gunicorn (2 workers, Redis, PostgreSQL).

    .venv/bin/python bench/login.py --ceremonies 500 --concurrency 8

It starts its own simulated J-LIS and portal (``idp serve``) on free ports with a fresh PostgreSQL
database, registers a client, enrolls one simulated phone per concurrent worker (a phone's signature
counter serialises its approvals), warms up, then runs N ceremonies from C threads, each with
keep-alive sessions. A ceremony is: browser ``GET /authorize`` (answered with the login page) → phone
looks the transaction up by the page's QR payload → phone approves (WebAuthn assertion and, for the
requested attributes, a consent signature) → browser polls the status ``--polls`` times (default 1,
as the page's script must learn of the approval at least once) → browser ``/continue`` (redirect with
the code) → RP ``POST /token`` → RP ``GET /userinfo``.

Server CPU is the utime+stime of the gunicorn master and workers (``/proc/<pid>/stat``, which sums
their threads), before and after, as ``docs``' performance notes ask: on this 2-core machine the
phone-side crypto and the HTTP clients run in this process and compete with the server for the cores,
so ceremonies per second measures the driver as much as the server. Redis and PostgreSQL CPU are
not counted. For latency percentiles free of queueing, pass ``--rate`` below saturation.

Start-up code is shared with the end-to-end tests: ``tests/e2e/world.py``. ``IDP_*`` variables in
the bench's environment reach the portal (``IDP_OPS__METRICS=false IDP_OPS__JSON_LOGS=false``
measures without observability); rate limits are off unless ``--rate-limits``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import world  # the shared start-up code lives beside the end-to-end tests

ADMIN_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never fetched: the RP reads the code from the Location header


@dataclass
class Driver:
    """One concurrent user: a phone of its own, a browser session and an RP session (keep-alive)."""

    portal_url: str
    client: world.RegisteredClient
    phone: world.Phone
    scope: str
    polls: int

    def __post_init__(self) -> None:
        self.browser = requests.Session()
        self.rp = requests.Session()

    def ceremony(self) -> None:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(16)
        query = {"response_type": "code", "client_id": self.client.client_id, "redirect_uri": REDIRECT_URI,
                 "scope": self.scope, "state": state, "nonce": secrets.token_urlsafe(16),
                 "code_challenge": challenge, "code_challenge_method": "S256"}
        page = self.browser.get(f"{self.portal_url}/authorize?{urlencode(query)}", timeout=30)
        _expect(page, 200, "authorize")
        transaction = self.phone.lookup(world.qr_payload(page.text))
        self.phone.approve(transaction)
        for _ in range(self.polls):
            status = self.browser.get(self.portal_url + _attribute(page.text, "data-status-url"), timeout=30)
            _expect(status, 200, "status")
        answer = self.browser.get(self.portal_url + _attribute(page.text, "data-continue-url"),
                                  allow_redirects=False, timeout=30)
        _expect(answer, 303, "continue", also=302)
        returned = parse_qs(urlsplit(answer.headers["Location"]).query)
        if returned.get("state") != [state] or "code" not in returned:
            raise RuntimeError(f"continue returned {returned}")
        token = self.rp.post(f"{self.portal_url}/token", timeout=30, auth=(self.client.client_id,
                             self.client.client_secret), data={
            "grant_type": "authorization_code", "code": returned["code"][0], "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        })
        _expect(token, 200, "token")
        userinfo = self.rp.get(f"{self.portal_url}/userinfo", timeout=30,
                               headers={"Authorization": f"Bearer {token.json()['access_token']}"})
        _expect(userinfo, 200, "userinfo")


def _expect(response: requests.Response, status: int, step: str, also: int | None = None) -> None:
    if response.status_code not in {status, also}:
        raise RuntimeError(f"{step}: HTTP {response.status_code}: {response.text[:300]}")


def _attribute(page: str, name: str) -> str:
    start = page.index(f'{name}="') + len(name) + 2
    return page[start:page.index('"', start)]


@dataclass
class Results:
    latencies: list[float]
    errors: list[str]
    wall: float


def run(drivers: list[Driver], ceremonies: int, rate: float | None) -> Results:
    """``ceremonies`` ceremonies shared among the drivers' threads; closed loop, or paced at ``rate``/s."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = 0
    start = time.perf_counter()

    def next_ceremony() -> int | None:
        nonlocal issued
        with lock:
            if issued >= ceremonies:
                return None
            issued += 1
            return issued - 1

    def work(driver: Driver) -> None:
        while (number := next_ceremony()) is not None:
            if rate:
                time.sleep(max(0.0, start + number / rate - time.perf_counter()))
            began = time.perf_counter()
            try:
                driver.ceremony()
            except Exception as exc:  # noqa: BLE001 - a failed ceremony is counted and reported, not fatal
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=work, args=(driver,)) for driver in drivers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Results(latencies=latencies, errors=errors, wall=time.perf_counter() - start)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ceremonies", type=int, default=500, help="measured ceremonies (default 500)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent users, one phone each (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--polls", type=int, default=1, help="browser status polls per ceremony (default 1)")
    parser.add_argument("--scope", default=" ".join(world.RP_SCOPES), help="scope the RP requests")
    parser.add_argument("--rate", type=float, default=None, help="pace ceremony starts at this many per second")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured ceremonies per user first (default 2)")
    parser.add_argument("--rate-limits", action="store_true",
                        help="keep the portal's rate limits on (off by default: every simulated user shares 127.0.0.1, "
                             "which the per-address limits would count as one)")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the J-LIS thread's access log
    if not args.rate_limits:
        os.environ["IDP_LIMITS__ENABLED"] = "false"  # read by `idp serve`, started below

    with tempfile.TemporaryDirectory(prefix="bench-login-") as scratch, \
            world.simulated_jlis(Path(scratch) / "sim") as sim, \
            world.fresh_database(ADMIN_DATABASE_URL, prefix="bench") as database_url:
        portal = world.initialised_portal(sim, Path(scratch) / "portal", database_url=database_url,
                                          redis_url=REDIS_URL)
        # The bench's own IDP_* settings reach the portal it serves (e.g. IDP_OPS__METRICS=false).
        portal.env |= {name: value for name, value in os.environ.items() if name.startswith("IDP_")}
        client = portal.add_client("Bench Shop", [REDIRECT_URI], scopes=tuple(args.scope.split()))
        portal.sync_revocations()
        with portal.serving(workers=args.workers) as server:
            print(f"portal {portal.url}: gunicorn master {server.process.pid}, workers {server.workers()}")
            print(f"enrolling {args.concurrency} phones (one card each)...", flush=True)
            drivers = [
                Driver(portal.url, client, world.enrolled_phone(sim, portal.url, phone=f"phone{n}", card=f"card{n}"),
                       args.scope, args.polls)
                for n in range(args.concurrency)
            ]
            warmup = run(drivers, args.warmup * args.concurrency, None)
            if warmup.errors:
                print(f"warm-up failed: {warmup.errors[0]}\n{server.log_tail()}")
                return 1
            workers_before = server.workers()
            cpu_before = server.cpu_seconds()
            results = run(drivers, args.ceremonies, args.rate)
            cpu_after = server.cpu_seconds()
            rss = server.rss_kib()
            restarted = server.workers() != workers_before
    report(args, results, cpu_after - cpu_before, rss, server.process.pid, restarted=restarted)
    return 1 if results.errors else 0


def report(args: argparse.Namespace, results: Results, cpu: float, rss: dict[int, int], master: int, *,
           restarted: bool) -> None:
    done = len(results.latencies)
    requests_per = 6 + args.polls
    print(f"ceremonies: {done} ok, {len(results.errors)} failed, concurrency {args.concurrency}, "
          f"{args.workers} gunicorn workers, {requests_per} requests per ceremony "
          f"({args.polls} status poll{'s' if args.polls != 1 else ''}), scope '{args.scope}'"
          + (f", paced at {args.rate}/s" if args.rate else ", closed loop"))
    if results.errors:
        print(f"first failure: {results.errors[0]}")
    if not done:
        return
    print(f"throughput: {done / results.wall:.1f} ceremonies/s ({results.wall:.2f} s wall)")
    print(f"latency: p50 {percentile(results.latencies, 0.50) * 1000:.1f} ms, "
          f"p99 {percentile(results.latencies, 0.99) * 1000:.1f} ms, "
          f"mean {statistics.fmean(results.latencies) * 1000:.1f} ms")
    print(f"server CPU: {cpu * 1000 / done:.2f} ms per ceremony "
          f"({cpu:.2f} s over master + workers, {cpu * 1000 / done / requests_per:.2f} ms per request)"
          + (" [a worker was restarted during the run]" if restarted else ""))
    sizes = ", ".join(f"{'master' if pid == master else 'worker'} {pid}: {kib / 1024:.1f} MiB"
                      for pid, kib in rss.items())
    print(f"RSS: {sizes}")
    print("note: the phones' crypto and the HTTP clients run in this process and share the 2 cores with the "
          "server; server CPU per ceremony is the figure to compare with the 5 ms budget")


if __name__ == "__main__":
    sys.exit(main())
