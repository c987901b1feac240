"""Benchmark complete signing ceremonies against the portal under gunicorn (2 workers, Redis, PostgreSQL).

    .venv/bin/python bench/sign.py --ceremonies 100 --concurrency 4 --documents 1
    .venv/bin/python bench/sign.py --ceremonies 100 --concurrency 4 --documents 3 --pdf

It starts its own simulated J-LIS and portal (``idp serve``) on free ports with a fresh PostgreSQL
database, registers a client, enrolls one simulated phone per concurrent worker (a phone's signature
counter serialises its approvals), warms up, then runs N ceremonies from C threads, each with
keep-alive sessions. A ceremony is: RP ``POST /par`` with RFC 9396 ``authorization_details`` naming
``--documents`` documents (their SHA-256 only, so the portal makes detached CAdES signatures; with
``--pdf`` each document is a one-page PDF sent inline, so it makes PAdES-signed PDFs) → browser
``GET /authorize`` with the request_uri (the login page) → phone looks the transaction up by the
page's QR payload, naming its credential (the portal prepares every document for its signature
certificate) → phone approves (WebAuthn assertion by the authentication key, one signature per
document by the signature key; the portal assembles, timestamps, checks and stores every signature
and issues the signed-document assertion) → browser polls the status once → browser ``/continue``
(redirect with the code) → RP ``POST /token`` → RP ``GET /signing/v1/results``. Eight requests.

Server CPU is the utime+stime of the gunicorn master and workers (``/proc/<pid>/stat``, which sums
their threads), before and after, divided by the documents signed: on this 2-core machine the
phone-side crypto and the HTTP clients run in this process and compete with the server for the
cores, so documents per second measures the driver as much as the server. Redis and PostgreSQL CPU
are not counted. For latency percentiles free of queueing, pass ``--rate`` below saturation; with
``--concurrency 1`` the server CPU of each ceremony is read too, and its percentiles printed.

Start-up code is shared with the end-to-end tests: ``tests/e2e/world.py``. ``IDP_*`` variables in
the bench's environment reach the portal; rate limits are off unless ``--rate-limits``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import world  # the shared start-up code lives beside the end-to-end tests
from documents import one_page_pdf  # the PDF the tests send too

ADMIN_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never fetched: the RP reads the code from the Location header
SHA256_OID = "2.16.840.1.101.3.4.2.1"
SCOPES = ("openid", "sign")
"""A signing request asks for the ``sign`` scope, as at the Digital Authentication App."""
REQUESTS_PER_CEREMONY = 8
MAX_DOCUMENTS = 10
"""The portal's limit of documents per signing request (``idp.signing.flow.MAX_DOCUMENTS``)."""




def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Driver:
    """One concurrent user: a phone of its own, a browser session and an RP session (keep-alive)."""

    portal_url: str
    client: world.RegisteredClient
    phone: world.Phone
    documents: int
    pdf: bool

    def __post_init__(self) -> None:
        self.browser = requests.Session()
        self.rp = requests.Session()

    def details(self) -> str:
        """``authorization_details`` for this ceremony's documents, each one new (no two digests alike)."""
        entries = []
        for number in range(1, self.documents + 1):
            nonce = secrets.token_hex(8)
            if self.pdf:
                pdf = one_page_pdf(f"Contract {nonce}: the buyer agrees to every clause.")
                entries.append({"label": f"Contract {number}.pdf", "hash": _b64(hashlib.sha256(pdf).digest()),
                                "document": _b64(pdf)})
            else:
                document = f"Contract {nonce}: the buyer agrees to every clause.\n".encode() * 40
                entries.append({"label": f"Contract {number}", "hash": _b64(hashlib.sha256(document).digest())})
        return json.dumps([{"type": "document_signature", "hashAlgorithmOID": SHA256_OID,
                            "documentDigests": entries}])

    def ceremony(self, details: str) -> None:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(16)
        auth = (self.client.client_id, self.client.client_secret)
        pushed = self.rp.post(f"{self.portal_url}/par", auth=auth, timeout=30, data={
            "response_type": "code", "client_id": self.client.client_id, "redirect_uri": REDIRECT_URI,
            "scope": " ".join(SCOPES), "state": state, "nonce": secrets.token_urlsafe(16), "code_challenge": challenge,
            "code_challenge_method": "S256", "authorization_details": details,
        })
        _expect(pushed, 201, "par")
        query = {"client_id": self.client.client_id, "request_uri": pushed.json()["request_uri"]}
        page = self.browser.get(f"{self.portal_url}/authorize?{urlencode(query)}", timeout=30)
        _expect(page, 200, "authorize")
        transaction = self.phone.client.lookup_transaction(
            qr=world.qr_payload(page.text), credential_id=self.phone.enrollment.auth_credential_id,
        )
        if len(transaction.get("documents", [])) != self.documents:
            raise RuntimeError(f"lookup listed {transaction.get('documents')}")
        self.phone.approve(transaction)
        status = self.browser.get(self.portal_url + _attribute(page.text, "data-status-url"), timeout=30)
        _expect(status, 200, "status")
        answer = self.browser.get(self.portal_url + _attribute(page.text, "data-continue-url"),
                                  allow_redirects=False, timeout=30)
        _expect(answer, 303, "continue", also=302)
        returned = parse_qs(urlsplit(answer.headers["Location"]).query)
        if returned.get("state") != [state] or "code" not in returned:
            raise RuntimeError(f"continue returned {returned}")
        token = self.rp.post(f"{self.portal_url}/token", auth=auth, timeout=30, data={
            "grant_type": "authorization_code", "code": returned["code"][0], "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        })
        _expect(token, 200, "token")
        results = self.rp.get(f"{self.portal_url}/signing/v1/results", timeout=30,
                              headers={"Authorization": f"Bearer {token.json()['access_token']}"})
        _expect(results, 200, "results")
        signed = results.json()["documents"]
        wanted = "signed_pdf" if self.pdf else "signature"
        if len(signed) != self.documents or not all(entry.get(wanted) for entry in signed):
            raise RuntimeError(f"results hold {len(signed)} documents without {wanted}")


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
    server_cpu: list[float]
    """Server CPU seconds of each ceremony, when they ran one at a time (``--concurrency 1``)."""


def run(drivers: list[Driver], ceremonies: int, rate: float | None,
        server_cpu: Callable[[], float] | None = None) -> Results:
    """``ceremonies`` ceremonies shared among the drivers' threads; closed loop, or paced at ``rate``/s.

    Each ceremony's documents (and PDFs) are made before its clock starts: the RP had them already.
    With one driver and ``server_cpu``, each ceremony's server CPU is read too (nothing else runs then).
    """
    per_ceremony = server_cpu if len(drivers) == 1 else None
    cpu: list[float] = []
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
            details = driver.details()
            if rate:
                time.sleep(max(0.0, start + number / rate - time.perf_counter()))
            cpu_began = per_ceremony() if per_ceremony else 0.0
            began = time.perf_counter()
            try:
                driver.ceremony(details)
            except Exception as exc:  # noqa: BLE001 - a failed ceremony is counted and reported, not fatal
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(time.perf_counter() - began)
                if per_ceremony:
                    cpu.append(per_ceremony() - cpu_began)

    threads = [threading.Thread(target=work, args=(driver,)) for driver in drivers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Results(latencies=latencies, errors=errors, wall=time.perf_counter() - start, server_cpu=cpu)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ceremonies", type=int, default=100, help="measured ceremonies (default 100)")
    parser.add_argument("--documents", type=int, default=1, help="documents per signing request, 1 to 10 (default 1)")
    parser.add_argument("--pdf", action="store_true",
                        help="send each document as an inline PDF (PAdES); else its digest only (CAdES)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent users, one phone each (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--rate", type=float, default=None, help="pace ceremony starts at this many per second")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured ceremonies per user first (default 2)")
    parser.add_argument("--rate-limits", action="store_true",
                        help="keep the portal's rate limits on (off by default: every simulated user shares 127.0.0.1, "
                             "which the per-address limits would count as one)")
    args = parser.parse_args()
    if not 1 <= args.documents <= MAX_DOCUMENTS:
        parser.error(f"--documents is 1 to {MAX_DOCUMENTS} (the portal's limit per request)")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the J-LIS thread's access log
    if not args.rate_limits:
        os.environ["IDP_LIMITS__ENABLED"] = "false"  # read by `idp serve`, started below

    with tempfile.TemporaryDirectory(prefix="bench-sign-") as scratch, \
            world.simulated_jlis(Path(scratch) / "sim") as sim, \
            world.fresh_database(ADMIN_DATABASE_URL, prefix="bench") as database_url:
        portal = world.initialised_portal(sim, Path(scratch) / "portal", database_url=database_url,
                                          redis_url=REDIS_URL)
        # The bench's own IDP_* settings reach the portal it serves (world.py strips the caller's).
        portal.env |= {name: value for name, value in os.environ.items() if name.startswith("IDP_")}
        client = portal.add_client("Bench Shop", [REDIRECT_URI], scopes=SCOPES)
        portal.sync_revocations()
        with portal.serving(workers=args.workers) as server:
            print(f"portal {portal.url}: gunicorn master {server.process.pid}, workers {server.workers()}")
            print(f"enrolling {args.concurrency} phones (one card each)...", flush=True)
            drivers = [
                Driver(portal.url, client, world.enrolled_phone(sim, portal.url, phone=f"phone{n}", card=f"card{n}"),
                       args.documents, args.pdf)
                for n in range(args.concurrency)
            ]
            warmup = run(drivers, args.warmup * args.concurrency, None)
            if warmup.errors:
                print(f"warm-up failed: {warmup.errors[0]}\n{server.log_tail()}")
                return 1
            workers_before = server.workers()
            cpu_before = server.cpu_seconds()
            results = run(drivers, args.ceremonies, args.rate, server.cpu_seconds)
            cpu_after = server.cpu_seconds()
            rss = server.rss_kib()
            restarted = server.workers() != workers_before
    report(args, results, cpu_after - cpu_before, rss, server.process.pid, restarted=restarted)
    return 1 if results.errors else 0


def report(args: argparse.Namespace, results: Results, cpu: float, rss: dict[int, int], master: int, *,
           restarted: bool) -> None:
    done = len(results.latencies)
    documents = done * args.documents
    form = "PAdES (inline PDF)" if args.pdf else "CAdES (digest only)"
    print(f"ceremonies: {done} ok, {len(results.errors)} failed, {args.documents} document"
          f"{'s' if args.documents != 1 else ''} each, {form}, concurrency {args.concurrency}, "
          f"{args.workers} gunicorn workers, {REQUESTS_PER_CEREMONY} requests per ceremony"
          + (f", paced at {args.rate}/s" if args.rate else ", closed loop"))
    if results.errors:
        print(f"first failure: {results.errors[0]}")
    if not done:
        return
    print(f"throughput: {documents / results.wall:.1f} signed documents/s, {done / results.wall:.1f} ceremonies/s "
          f"({results.wall:.2f} s wall)")
    print(f"latency per ceremony: p50 {percentile(results.latencies, 0.50) * 1000:.1f} ms, "
          f"p99 {percentile(results.latencies, 0.99) * 1000:.1f} ms, "
          f"mean {statistics.fmean(results.latencies) * 1000:.1f} ms")
    print(f"server CPU: {cpu * 1000 / documents:.2f} ms per signed document, {cpu * 1000 / done:.2f} ms per ceremony "
          f"({cpu:.2f} s over master + workers)" + (" [a worker was restarted during the run]" if restarted else ""))
    if results.server_cpu:
        each = results.server_cpu
        print(f"server CPU per ceremony, one at a time: p50 {percentile(each, 0.50) * 1000:.0f} ms, "
              f"p90 {percentile(each, 0.90) * 1000:.0f} ms, max {max(each) * 1000:.0f} ms "
              f"(/proc counts in clock ticks of {1000 / os.sysconf('SC_CLK_TCK'):.0f} ms)")
    sizes = ", ".join(f"{'master' if pid == master else 'worker'} {pid}: {kib / 1024:.1f} MiB"
                      for pid, kib in rss.items())
    print(f"RSS: {sizes}")
    print("note: the phones' crypto, the PDFs and the HTTP clients run in this process and share the 2 cores with "
          "the server; server CPU per signed document is the figure that measures the portal")


if __name__ == "__main__":
    sys.exit(main())
