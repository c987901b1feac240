"""The floor under every portal request: gunicorn serving a WSGI app that does nothing.

    .venv/bin/python bench/http_floor.py --requests 3000 --concurrency 4

Starts gunicorn (2 workers; worker class, threads and keep-alive from the same ``GUNICORN_*``
variables ``config/gunicorn.conf.py`` reads) on a free port with the app below, which answers
a fixed 15-byte JSON body, sends it N requests from C threads with keep-alive sessions, and prints
server CPU per request (utime+stime of master and workers, as ``bench/login.py`` counts it).

A login ceremony is 7 requests (``bench/login.py``): 7 × this figure is what gunicorn alone costs
of the 5 ms budget on this machine, before Flask or any portal code runs.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import requests

BODY = b'{"status":"ok"}'


def application(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:  # noqa: ARG001
    """The cheapest possible answer."""
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _cpu_seconds(master: int) -> float:
    found = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True, check=False)
    total = 0
    for pid in [master, *(int(pid) for pid in found.stdout.split())]:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="measured requests (default 3000)")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    args = parser.parse_args()
    port = _free_port()
    worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or "sync"
    command = [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers),
        "--worker-class", worker_class, "--threads", os.environ.get("GUNICORN_THREADS") or "1",
        "--keep-alive", os.environ.get("GUNICORN_KEEPALIVE") or "5", "--chdir", str(Path(__file__).parent),
        "http_floor:application",
    ]
    server = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        per_thread = args.requests // args.concurrency

        def hammer(count: int) -> None:
            with requests.Session() as session:
                for _ in range(count):
                    session.get(url, timeout=10).raise_for_status()

        hammer(200)  # warm-up
        before, began = _cpu_seconds(server.pid), time.perf_counter()
        threads = [threading.Thread(target=hammer, args=(per_thread,)) for _ in range(args.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        cpu, wall = _cpu_seconds(server.pid) - before, time.perf_counter() - began
    finally:
        server.terminate()
        server.wait(timeout=30)
    done = per_thread * args.concurrency
    print(f"gunicorn {worker_class}, {args.workers} workers, {done} requests from {args.concurrency} threads: "
          f"{done / wall:.0f} requests/s, server CPU {cpu * 1e6 / done:.0f} µs per request "
          f"(× 7 = {cpu * 7e3 / done:.2f} ms of a login ceremony's budget)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
