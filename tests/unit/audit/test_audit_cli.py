"""``idp audit verify`` and ``idp audit export`` as an operator runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from idp.audit import AuditEntry, AuditEvent, AuditLog, Head, check_chain
from idp.cli import main
from idp.clock import SystemClock
from idp.store.database import make_engine, make_session_factory, upgrade

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    return tmp_path / "instance"


@pytest.fixture
def url(database_url: str, instance: Path) -> str:
    """The instance's database: its SQLite file, or a PostgreSQL database named by DATABASE_URL."""
    if database_url.startswith("sqlite"):
        instance.mkdir()
        return f"sqlite:///{instance / 'idp.sqlite3'}"
    return database_url


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def log(engine: Engine) -> AuditLog:
    return AuditLog(make_session_factory(engine), clock=SystemClock())


def run(url: str, instance: Path, *args: str) -> Result:
    database = "" if url.startswith("sqlite") else url
    env = {"IDP_CONFIG": None, "DATABASE_URL": database or None, "REDIS_URL": None}
    return CliRunner(env=env).invoke(main, [*args, "--instance", str(instance)], catch_exceptions=False)


@pytest.fixture
def two(log: AuditLog) -> list[AuditEntry]:
    return [
        log.append(AuditEvent.LOGIN, actor="phone:dev-1", subject="client:shop", details={"grant": "g-1"}),
        log.append(AuditEvent.LOGIN, actor="phone:dev-2", subject="client:shop", details={"grant": "g-2"}),
    ]


def test_verify_reports_an_intact_chain_and_its_head(url, instance, two):
    result = run(url, instance, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert result.output == f"intact: 2 records, head {two[1].hash}\n"


def test_verify_json_of_an_intact_chain(url, instance, two):
    result = run(url, instance, "audit", "verify", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "intact": True, "count": 2, "head": {"seq": 2, "hash": two[1].hash}, "broken": None,
    }


def test_verify_of_an_empty_log_is_intact(url, instance, engine):
    result = run(url, instance, "audit", "verify")
    assert (result.exit_code, result.output) == (0, "intact: 0 records, head none\n")


def test_verify_names_a_modified_record_and_exits_1(url, instance, engine, two):
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_records SET details = '{\"grant\": \"g-9\"}' WHERE seq = 1"))
    result = run(url, instance, "audit", "verify")
    assert result.exit_code == 1
    assert result.output == (
        "broken at record 1: hash_mismatch (record 1 was changed: its fields do not hash to its stored hash)\n"
    )


def test_verify_json_names_a_deleted_record_and_exits_1(url, instance, engine, two):
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_records WHERE seq = 1"))
    result = run(url, instance, "audit", "verify", "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert (report["intact"], report["count"]) == (False, 0)
    assert (report["broken"]["seq"], report["broken"]["reason"]) == (1, "sequence_gap")


def test_export_writes_json_lines_that_verify_offline(url, instance, two):
    result = run(url, instance, "audit", "export")
    assert result.exit_code == 0, result.output
    entries = [AuditEntry.from_json(json.loads(line)) for line in result.output.splitlines()]
    assert entries == two
    assert check_chain(entries, head=Head(seq=2, hash=two[1].hash)).intact


def test_export_since_writes_only_the_later_records(url, instance, two):
    result = run(url, instance, "audit", "export", "--since", "1")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["seq"] for line in result.output.splitlines()] == [2]


def test_export_refuses_a_negative_since(url, instance, two):
    result = run(url, instance, "audit", "export", "--since", "-1")
    assert result.exit_code == 2
    assert "-1 is not in the range x>=0" in result.output


def test_client_registry_changes_are_audited_as_the_operator(url, instance, engine, log):
    added = run(url, instance, "clients", "add", "--name", "Shop", "--redirect-uri", "https://shop.example/cb",
                "--scope", "openid", "--scope", "name", "--json")
    assert added.exit_code == 0, added.output
    registration = json.loads(added.output)
    client_id, secret = registration["client_id"], registration["client_secret"]
    assert run(url, instance, "clients", "remove", client_id).exit_code == 0
    entries = list(log.export())
    assert [(entry.event, entry.actor, entry.subject, entry.details) for entry in entries] == [
        ("client.registered", "operator", [f"client:{client_id}"],
         {"auth_method": "client_secret_basic", "scopes": ["openid", "name"]}),
        ("client.removed", "operator", [f"client:{client_id}"], {}),
    ]
    assert run(url, instance, "audit", "verify").exit_code == 0
    assert secret not in json.dumps([entry.to_json() for entry in entries])
