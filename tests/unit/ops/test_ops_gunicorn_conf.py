"""config/gunicorn.conf.py: the worker model from the environment, one worker on the in-process store."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[3] / "config" / "gunicorn.conf.py"
READ = """
import json, runpy, sys
conf = runpy.run_path(sys.argv[1])
try:
    print(json.dumps({key: conf[key] for key in (
        "bind", "workers", "worker_class", "threads", "keepalive", "graceful_timeout", "forwarded_allow_ips",
        "logger_class", "accesslog", "preload_app")}))
finally:
    conf["on_exit"](None)
"""


def load(**environ):
    """The configuration's values, loaded as gunicorn loads it (in a process of its own: it sets up metrics)."""
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("IDP_", "GUNICORN_", "PROMETHEUS_", "COV_"))
             and key not in {"REDIS_URL", "DATABASE_URL", "FORWARDED_ALLOW_IPS"}}
    return subprocess.run([sys.executable, "-c", READ, str(CONF)], env=clean | environ, capture_output=True,
                          text=True, timeout=120, check=False)


def test_defaults_on_the_in_process_store_are_one_worker_on_loopback_with_json_access_lines():
    done = load()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "bind": ["127.0.0.1:8000"], "workers": 1, "worker_class": "sync", "threads": 1, "keepalive": 5,
        "graceful_timeout": 30, "forwarded_allow_ips": "127.0.0.1,::1",
        "logger_class": "idp.ops.access_log.JsonAccessLogger", "accesslog": "-", "preload_app": False,
    }


def test_the_worker_model_comes_from_the_environment():
    done = load(REDIS_URL="redis://127.0.0.1:6379/0", GUNICORN_WORKERS="3", GUNICORN_WORKER_CLASS="gthread",
                GUNICORN_THREADS="4", GUNICORN_KEEPALIVE="2", GUNICORN_BIND="0.0.0.0:9000",
                FORWARDED_ALLOW_IPS="10.0.0.2", IDP_OPS__JSON_LOGS="false")
    assert done.returncode == 0, done.stderr
    values = json.loads(done.stdout)
    assert (values["bind"], values["workers"], values["worker_class"], values["threads"], values["keepalive"]) == (
        ["0.0.0.0:9000"], 3, "gthread", 4, 2)
    assert (values["forwarded_allow_ips"], values["logger_class"]) == (
        "10.0.0.2", "idp.ops.access_log.TextAccessLogger")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GUNICORN_WORKERS": "2"}, "the in-process ephemeral store serves one worker only: set REDIS_URL"),
        ({"IDP_OPS__METRICS_TOKEN": "short"}, "ops.metrics_token must be at least 32 characters"),
    ],
    ids=["several-workers-without-redis", "bad-portal-setting"],
)
def test_a_configuration_that_cannot_work_is_refused_at_start(environ, message):
    done = load(**environ)
    assert done.returncode != 0
    assert message in done.stderr
