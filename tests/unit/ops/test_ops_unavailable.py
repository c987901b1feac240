"""An unavailable dependency is a 503 with Retry-After in each API's shape; closed pooled connections are dropped.

The apps here use a Redis URL on a port where nothing listens: every ephemeral-store call is
refused, as when Redis is down. ``tests/e2e/test_dependency_outage.py`` cuts and restores both
servers under gunicorn.
"""

from __future__ import annotations

import logging
import socket
import sqlite3

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import exc as sa_exc

from idp.ops import metrics
from idp.ops.connections import peer_closed
from idp.ops.unavailable import Dependency, unavailable_dependency
from idp.store.ephemeral import EphemeralStoreError, EphemeralStoreUnavailable

PROBLEM_TYPE = "https://id.myna.example/problems/service-unavailable"


def _refused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again: connections to it are refused


@pytest.fixture
def app(make_app):
    return make_app(redis_url=f"redis://127.0.0.1:{_refused_port()}/0")


def _unavailable_count(dependency: str) -> float:
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == "myna_dependency_unavailable_total" and sample.labels == {"dependency": dependency}:
                return sample.value
    return 0.0


@pytest.mark.parametrize(("error", "dependency"), [
    (EphemeralStoreUnavailable("Redis is unavailable"), Dependency.EPHEMERAL_STORE),
    (sa_exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused")), Dependency.DATABASE),
    (sa_exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked")), Dependency.DATABASE),
    (sa_exc.TimeoutError("QueuePool limit reached"), Dependency.DATABASE),
    (sa_exc.DBAPIError("SELECT 1", {}, psycopg.DatabaseError("reset"), connection_invalidated=True),
     Dependency.DATABASE),
], ids=["redis", "postgresql-unreachable", "sqlite-busy", "pool-timeout", "invalidated"])
def test_outages_are_recognised_by_dependency(error, dependency):
    assert unavailable_dependency(error) is dependency


@pytest.mark.parametrize("error", [
    EphemeralStoreError("Redis refused the command: WRONGTYPE"),
    sa_exc.OperationalError("SELECT x FROM t", {}, sqlite3.OperationalError("no such table: t")),
    sa_exc.InterfaceError("SELECT ?", {}, sqlite3.InterfaceError("Error binding parameter 1")),
    sa_exc.IntegrityError("INSERT", {}, psycopg.IntegrityError("duplicate key")),
    sa_exc.ProgrammingError("SELECT x", {}, psycopg.ProgrammingError("undefined column")),
    ValueError("a bug"),
], ids=["redis-command", "sqlite-missing-table", "bad-parameter", "integrity", "programming", "bug"])
def test_other_errors_are_not_outages(error):
    assert unavailable_dependency(error) is None


def test_the_device_api_answers_a_retryable_problem_and_counts_it(app, caplog):
    before = _unavailable_count("ephemeral_store")
    with caplog.at_level(logging.WARNING):
        response = app.test_client().post("/device/v1/enrollments")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.mimetype == "application/problem+json"
    assert response.json["type"] == PROBLEM_TYPE
    assert _unavailable_count("ephemeral_store") == before + 1
    assert "dependency.unavailable dependency=ephemeral_store endpoint=device.start error=EphemeralStoreUnavailable" \
        in caplog.text
    assert "Traceback" not in caplog.text


def test_the_login_page_poll_answers_json_and_the_navigation_a_page(app):
    client = app.test_client()
    poll = client.get("/login/" + "a" * 22 + "/status")
    assert (poll.status_code, poll.headers["Retry-After"], poll.json["error"]) == (503, "5", "temporarily_unavailable")
    page = client.get("/login/" + "a" * 22 + "/continue", headers={"Accept-Language": "en"})
    assert (page.status_code, page.headers["Retry-After"], page.mimetype) == (503, "5", "text/html")
    assert '<code id="error">temporarily_unavailable</code>' in page.text
    assert "try again in a moment" in page.text
    japanese = client.post("/login/" + "a" * 22 + "/cancel")
    assert japanese.status_code == 503
    assert "しばらくしてから" in japanese.text


def test_userinfo_answers_temporarily_unavailable_not_invalid_token(app):
    response = app.test_client().get("/userinfo", headers={"Authorization": "Bearer " + "t" * 43})
    assert (response.status_code, response.headers["Retry-After"]) == (503, "5")
    assert response.json["error"] == "temporarily_unavailable"
    assert response.headers["Cache-Control"] == "no-store"


def test_a_socket_the_peer_closed_is_seen_without_a_round_trip():
    ours, theirs = socket.socketpair()
    try:
        assert not peer_closed(ours.fileno())
        theirs.close()
        assert peer_closed(ours.fileno())
    finally:
        ours.close()
