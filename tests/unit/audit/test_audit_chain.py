"""The audit log's hash chain on SQLite and PostgreSQL: appends, and every way of tampering found."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from idp.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditEvent,
    AuditLog,
    Head,
    InvalidAuditRecord,
    Reason,
    append_in,
    check_chain,
    record_hash,
)
from idp.audit.chain import canonical_bytes
from idp.clock import FixedClock
from idp.store.database import make_engine, make_session_factory, upgrade

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

EPOCH = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(EPOCH)


@pytest.fixture
def log(engine: Engine, clock: FixedClock) -> AuditLog:
    return AuditLog(make_session_factory(engine), clock=clock)


@pytest.fixture
def three(log: AuditLog, clock: FixedClock) -> list[AuditEntry]:
    """Three records: a client registered, a phone enrolled, a login."""
    entries = [log.append(AuditEvent.CLIENT_REGISTERED, actor="operator", subject="client:shop",
                          details={"auth_method": "client_secret_basic", "scopes": ["openid", "name"]})]
    clock.advance(timedelta(seconds=1))
    entries.append(log.append(AuditEvent.ENROLLMENT_COMPLETED, actor="phone:dev-1",
                              subject=["person:p-1", "device:dev-1", "certificate:smartphone-ca/1234567"],
                              details={"new_person": True}))
    clock.advance(timedelta(seconds=1))
    entries.append(log.append(AuditEvent.LOGIN, actor="phone:dev-1", subject="client:shop", details={"grant": "g-1"}))
    return entries


def sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def count_records(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM audit_records")).scalar_one())


def broken(log: AuditLog) -> tuple[int, Reason]:
    report = log.verify()
    assert report.broken is not None, report
    return report.broken.seq, report.broken.reason


# --- appending ---------------------------------------------------------------------------------


def test_empty_log_is_intact(log: AuditLog):
    report = log.verify()
    assert (report.intact, report.count) == (True, 0)


def test_appended_records_chain_from_genesis_to_the_head(log: AuditLog, three: list[AuditEntry]):
    assert [entry.seq for entry in three] == [1, 2, 3]
    assert three[0].prev_hash == GENESIS_HASH
    assert [entry.prev_hash for entry in three[1:]] == [entry.hash for entry in three[:-1]]
    report = log.verify()
    assert (report.intact, report.count, report.head) == (True, 3, Head(seq=3, hash=three[2].hash))


def test_hash_is_sha256_of_the_documented_canonical_json(three: list[AuditEntry]):
    first = three[0]
    assert canonical_bytes(
        seq=1, time=first.time, event=first.event, actor=first.actor, subject=first.subject, details=first.details,
        prev_hash=first.prev_hash,
    ) == (
        b'{"actor":"operator","details":{"auth_method":"client_secret_basic","scopes":["openid","name"]},'
        b'"event":"client.registered","prev_hash":"' + GENESIS_HASH.encode() + b'","seq":1,'
        b'"subject":["client:shop"],"time":"2025-04-01T09:00:00.000000Z"}'
    )


def test_stored_record_reads_back_as_appended(log: AuditLog, three: list[AuditEntry]):
    assert list(log.export()) == three


def test_append_in_rolled_back_with_its_transaction_leaves_nothing(engine: Engine, log: AuditLog):
    sessions = make_session_factory(engine)

    def change_that_fails_after_its_record() -> None:
        with sessions.begin() as session:
            log.append_in(session, AuditEvent.CLIENT_REMOVED, actor="operator", subject="client:shop")
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError, match="the change failed"):
        change_that_fails_after_its_record()
    assert count_records(engine) == 0
    assert log.verify().count == 0


def test_append_in_takes_a_core_connection(engine: Engine, log: AuditLog):
    with engine.begin() as connection:
        entry = log.append_in(connection, AuditEvent.KEY_ROTATED, actor="operator", subject="key:k-2",
                              details={"kid": "k-2", "purpose": "id_token"})
    assert entry.seq == 1
    assert log.verify().intact


@pytest.mark.parametrize("refused", [
    ("user.renamed", "operator", "client:shop", None, "not an audit event"),
    (AuditEvent.LOGIN, "山田　太郎", "client:shop", None, "the actor is not operator, portal"),
    (AuditEvent.LOGIN, "phone:", "client:shop", None, "the actor is not operator, portal"),
    (AuditEvent.LOGIN, "phone:d", "東京都千代田区永田町1-7-1", None, "a subject is not an internal id"),
    (AuditEvent.LOGIN, "phone:d", "certificate:smartphone-ca/12ab", None, "a subject is not an internal id"),
    (AuditEvent.LOGIN, "phone:d", [], None, "names at least one subject"),
    (AuditEvent.LOGIN, "phone:d", "client:shop", {"id_token": "eyJ"}, "login records no detail id_token"),
    (AuditEvent.CONSENT_GIVEN, "person:p", "client:shop", {"attributes": ["山田　太郎"]}, "short ASCII tokens"),
    (AuditEvent.LOGIN, "phone:d", "client:shop", {"grant": "a b"}, "a boolean, an integer or a short ASCII"),
    (AuditEvent.LOGIN, "phone:d", "client:shop", {"grant": 1.5}, "a boolean, an integer or a short ASCII"),
])
def test_record_that_could_carry_personal_data_is_refused(log, engine, refused):
    event, actor, subject, details, message = refused
    with pytest.raises(InvalidAuditRecord, match=message) as error:
        log.append(event, actor=actor, subject=subject, details=details)
    assert "山田" not in str(error.value)
    assert "東京" not in str(error.value)
    assert count_records(engine) == 0


@pytest.mark.postgres
def test_append_in_refuses_an_autocommit_connection(postgres_database: str):
    engine = make_engine(postgres_database)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            with pytest.raises(InvalidAuditRecord, match="append_in needs a transaction"):
                append_in(connection, AuditEvent.LOGIN, at=EPOCH, actor="portal", subject="client:shop")
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_twenty_workers_appending_at_once_never_fork_the_chain(postgres_database: str):
    engine = make_engine(postgres_database)
    upgrade(engine)
    log = AuditLog(make_session_factory(engine), clock=FixedClock(EPOCH))
    start = threading.Barrier(20)
    failures: list[BaseException] = []

    def worker(number: int) -> None:
        try:
            start.wait()
            log.append(AuditEvent.LOGIN, actor=f"phone:dev-{number}", subject="client:shop",
                       details={"grant": f"g-{number}"})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert failures == []
        report = log.verify()
        assert (report.intact, report.count) == (True, 20)
        assert sorted(entry.actor for entry in log.export()) == sorted(f"phone:dev-{n}" for n in range(20))
    finally:
        engine.dispose()


# --- tampering ---------------------------------------------------------------------------------


def test_modified_record_is_a_hash_mismatch(engine: Engine, log: AuditLog, three: list[AuditEntry]):
    sql(engine, "UPDATE audit_records SET actor = 'operator' WHERE seq = 2")
    assert broken(log) == (2, Reason.HASH_MISMATCH)


def test_modified_time_is_a_hash_mismatch(engine: Engine, log: AuditLog, three: list[AuditEntry]):
    sql(engine, "UPDATE audit_records SET time = :time WHERE seq = 1", time=EPOCH - timedelta(days=1))
    assert broken(log) == (1, Reason.HASH_MISMATCH)


def test_deleted_record_is_a_sequence_gap(engine: Engine, log: AuditLog, three: list[AuditEntry]):
    sql(engine, "DELETE FROM audit_records WHERE seq = 2")
    report = log.verify()
    assert report.broken is not None
    assert (report.broken.seq, report.broken.reason, report.count) == (2, Reason.SEQUENCE_GAP, 1)
    assert report.broken.message == "record 2 is missing: record 1 is followed by 3"


def test_deleted_last_record_is_a_sequence_gap_before_the_head(engine: Engine, log: AuditLog, three):
    sql(engine, "DELETE FROM audit_records WHERE seq = 3")
    assert broken(log) == (3, Reason.SEQUENCE_GAP)


def test_modified_prev_hash_is_a_prev_hash_mismatch(engine: Engine, log: AuditLog, three: list[AuditEntry]):
    sql(engine, "UPDATE audit_records SET prev_hash = :other WHERE seq = 3", other=three[0].hash)
    assert broken(log) == (3, Reason.PREV_HASH_MISMATCH)


def test_reordered_records_are_a_prev_hash_mismatch(engine: Engine, log: AuditLog, three: list[AuditEntry]):
    sql(engine, "UPDATE audit_records SET seq = 100 WHERE seq = 2")
    sql(engine, "UPDATE audit_records SET seq = 2 WHERE seq = 3")
    sql(engine, "UPDATE audit_records SET seq = 3 WHERE seq = 100")
    assert broken(log) == (2, Reason.PREV_HASH_MISMATCH)


def test_record_rewritten_with_a_fresh_hash_breaks_the_next_link(engine, log, three: list[AuditEntry]):
    second = three[1]
    forged = record_hash(seq=2, time=second.time, event=second.event, actor="operator", subject=second.subject,
                         details=second.details, prev_hash=second.prev_hash)
    sql(engine, "UPDATE audit_records SET actor = 'operator', hash = :forged WHERE seq = 2", forged=forged)
    assert broken(log) == (3, Reason.PREV_HASH_MISMATCH)


def test_last_record_rewritten_with_a_fresh_hash_no_longer_matches_the_head(engine, log, three):
    last = three[2]
    forged = record_hash(seq=3, time=last.time, event=last.event, actor="operator", subject=last.subject,
                         details=last.details, prev_hash=last.prev_hash)
    sql(engine, "UPDATE audit_records SET actor = 'operator', hash = :forged WHERE seq = 3", forged=forged)
    assert broken(log) == (3, Reason.HEAD_MISMATCH)


def test_record_inserted_after_the_head_is_found(engine: Engine, log: AuditLog, three: list[AuditEntry]):
    # A well-formed fourth record, chained to the third, written by something other than the log.
    fields = {"seq": 4, "time": EPOCH, "event": "login", "actor": "phone:dev-9", "subject": ["client:shop"],
              "details": {}, "prev_hash": three[2].hash}
    sql(engine, "INSERT INTO audit_records (seq, time, event, actor, subject, details, prev_hash, hash) "
                "VALUES (4, :time, 'login', 'phone:dev-9', '[\"client:shop\"]', '{}', :prev, :hash)",
        time=EPOCH, prev=three[2].hash, hash=record_hash(**fields))
    assert broken(log) == (4, Reason.AFTER_HEAD)


def test_deleted_head_puts_every_record_after_it(engine: Engine, log: AuditLog, three: list[AuditEntry]):
    sql(engine, "DELETE FROM audit_head")
    assert broken(log) == (1, Reason.AFTER_HEAD)


def test_append_after_a_deleted_record_continues_from_the_last_one(engine, log, three: list[AuditEntry]):
    # Tampering is reported, never repaired by the next append: the gap stays visible.
    sql(engine, "DELETE FROM audit_records WHERE seq = 2")
    log.append(AuditEvent.LOGIN, actor="phone:dev-1", subject="client:shop")
    assert broken(log) == (2, Reason.SEQUENCE_GAP)


# --- export ------------------------------------------------------------------------------------


def test_exported_lines_round_trip_and_verify_offline(log: AuditLog, three: list[AuditEntry]):
    lines = [entry.to_json() for entry in log.export()]
    assert [AuditEntry.from_json(line) for line in lines] == three
    report = check_chain((AuditEntry.from_json(line) for line in lines), head=Head(seq=3, hash=three[2].hash))
    assert (report.intact, report.count) == (True, 3)


def test_export_after_a_sequence_number_continues_the_chain(log: AuditLog, three: list[AuditEntry]):
    rest = list(log.export(after=1))
    assert [entry.seq for entry in rest] == [2, 3]
    assert check_chain(rest, head=None, start=Head(seq=1, hash=three[0].hash)).intact


def test_export_reads_past_one_batch(log: AuditLog, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("idp.audit.log._BATCH", 2)
    for number in range(5):
        log.append(AuditEvent.LOGIN, actor=f"phone:dev-{number}", subject="client:shop")
    assert [entry.seq for entry in log.export()] == [1, 2, 3, 4, 5]
    assert log.verify().count == 5


def test_naive_time_is_refused_before_anything_is_written(engine: Engine):
    with pytest.raises(ValueError, match="must be timezone-aware"), make_session_factory(engine).begin() as session:
        append_in(session, AuditEvent.LOGIN, at=datetime(2025, 4, 1, 9, 0), actor="portal", subject="client:shop")  # noqa: DTZ001 - the naive time under test
    assert count_records(engine) == 0


def test_repr_shows_no_connection_details(log: AuditLog):
    assert repr(log) == "AuditLog()"
