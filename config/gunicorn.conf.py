"""The portal's one gunicorn configuration: ``gunicorn -c config/gunicorn.conf.py idp.wsgi:app``, and ``idp serve``.

Everything here can be set from the environment, so a container needs no other file:

- ``GUNICORN_BIND`` (default 127.0.0.1:8000; the image sets 0.0.0.0:8000), ``GUNICORN_WORKERS``
  (default 2 per usable CPU + 1 on Redis; always 1 on the in-process ephemeral store, which
  serves one process only), ``GUNICORN_WORKER_CLASS`` (sync), ``GUNICORN_THREADS`` (1),
  ``GUNICORN_KEEPALIVE`` (5 s), ``GUNICORN_TIMEOUT`` (30 s), ``GUNICORN_GRACEFUL_TIMEOUT`` (30 s);
- ``FORWARDED_ALLOW_IPS``: the reverse proxies whose X-Forwarded-Proto is believed (loopback);
- ``PROMETHEUS_MULTIPROC_DIR``: where the workers share metric values (default: a temporary
  directory made at start and removed at exit);
- the portal's own settings (``IDP_CONFIG``, ``IDP_*``, ``DATABASE_URL``, ``REDIS_URL``), of which
  this file reads ``ops.json_logs`` and ``redis_url``.

The access log never holds a query string, a header or a body (``idp.ops.access_log``).
"""

# ruff: noqa: INP001 - a gunicorn configuration file, loaded by path, not a package module
import os
from pathlib import Path

from idp.ops import multiprocess

# Before anything imports prometheus_client: a worker reads this variable when it first does.
multiprocess.prepare_directory()

from idp.ops.logging import logging_config  # noqa: E402 - after the metrics directory is set
from idp.settings import load_settings  # noqa: E402

_settings = load_settings()
_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


bind = [os.environ.get("GUNICORN_BIND") or "127.0.0.1:8000"]
workers = _int("GUNICORN_WORKERS", 2 * _cpus + 1) if _settings.redis_url else 1
if not _settings.redis_url and _int("GUNICORN_WORKERS", 1) > 1:
    raise RuntimeError("the in-process ephemeral store serves one worker only: set REDIS_URL")
worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or "sync"
threads = _int("GUNICORN_THREADS", 1)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
"""On SIGTERM, a worker finishes the requests it holds for this long before it is killed."""
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1"
preload_app = False  # each worker builds its app after the fork: its own connections, its own metric files
proc_name = "myna-gateway"
control_socket_disable = True  # operators use signals; one socket path in $HOME would collide between instances
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108 - heartbeat files, off the disk

accesslog = "-"
logger_class = f"idp.ops.access_log.{'Json' if _settings.ops.json_logs else 'Text'}AccessLogger"
logconfig_dict = logging_config(json_logs=_settings.ops.json_logs)


# The portal's code (not its app) is imported here, in the master, before the port is bound: each
# worker then starts from a fork that has it, in a fraction of a second and sharing its memory,
# and builds its own app (connections, metric files) after the fork.
import idp.app  # noqa: E402, F401


def child_exit(server: object, worker: object) -> None:  # noqa: ARG001 - gunicorn's hook signature
    """A worker has exited: its live metric values no longer count."""
    multiprocess.worker_exited(worker.pid)  # type: ignore[attr-defined]


def on_exit(server: object) -> None:  # noqa: ARG001 - gunicorn's hook signature
    """The master is stopping: remove the metrics directory if it made it."""
    multiprocess.remove_directory()
