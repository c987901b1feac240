"""The durable store's engines, sessions and migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, UniqueConstraint, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import CreateTable

from idp.store.database import (
    NAMING_CONVENTION,
    Base,
    SchemaMigrationError,
    current_revision,
    head_revision,
    make_engine,
    make_session_factory,
    migration_connection,
    transaction,
    upgrade,
)
from idp.store.types import UtcDateTime

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

JST = timezone(timedelta(hours=9))


class Scratch(DeclarativeBase):
    """Throwaway records for these tests; never on ``Base.metadata``, so never in a migration."""


class Note(Scratch):
    __tablename__ = "note"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String(100))
    written_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def parent_and_child(engine: Engine) -> tuple[Table, Table]:
    metadata = MetaData()
    parent = Table("parent", metadata, Column("id", Integer, primary_key=True))
    child = Table(
        "child",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("parent_id", ForeignKey("parent.id"), nullable=False),
    )
    metadata.create_all(engine)
    return parent, child


# --- migrations ------------------------------------------------------------------------------


def test_fresh_database_has_no_revision(engine: Engine):
    assert current_revision(engine) is None


def test_upgrade_brings_a_fresh_database_to_head_and_can_run_again(engine: Engine):
    upgrade(engine)
    assert current_revision(engine) == head_revision()

    upgrade(engine)
    assert current_revision(engine) == head_revision()


def test_migrated_schema_matches_the_records(engine: Engine):
    # What autogenerate would write next must be nothing: every record has its migration.
    import idp.store.models  # noqa: F401, PLC0415 - registers the records, as env.py does

    upgrade(engine)

    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_sqlite_migration_leaving_a_foreign_key_violation_is_rolled_back(sqlite_database: str):
    # Foreign keys are off inside a SQLite migration (batch mode drops tables); they are checked at the end.
    engine = make_engine(sqlite_database)
    metadata = MetaData()
    Table("parent", metadata, Column("id", Integer, primary_key=True))
    Table("child", metadata, Column("id", Integer, primary_key=True), Column("parent_id", ForeignKey("parent.id")))
    metadata.create_all(engine)

    def migrate_an_orphan_in() -> None:
        with migration_connection(engine) as connection:
            connection.execute(text("INSERT INTO child (id, parent_id) VALUES (1, 42)"))

    with pytest.raises(SchemaMigrationError, match=r"foreign key violations in \['child'\]"):
        migrate_an_orphan_in()

    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM child")).scalar_one() == 0
    engine.dispose()


# --- engines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgresql_urls_are_read_as_psycopg_3(scheme: str):
    engine = make_engine(f"{scheme}://idp:secret@db.example:5432/idp")

    assert engine.url.drivername == "postgresql+psycopg"
    assert engine.url.render_as_string(hide_password=False) == "postgresql+psycopg://idp:secret@db.example:5432/idp"
    engine.dispose()


def test_unsupported_database_is_refused():
    with pytest.raises(ValueError, match="SQLite or PostgreSQL, not mysql"):
        make_engine("mysql://idp@db.example/idp")


def test_foreign_keys_are_enforced(engine: Engine, parent_and_child: tuple[Table, Table]):
    _, child = parent_and_child

    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(child.insert().values(id=1, parent_id=42))


def test_foreign_keys_stay_enforced_after_an_upgrade(engine: Engine, parent_and_child: tuple[Table, Table]):
    _, child = parent_and_child
    upgrade(engine)

    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(child.insert().values(id=1, parent_id=42))


def test_sqlite_uses_write_ahead_logging(sqlite_database: str):
    engine = make_engine(sqlite_database)

    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar_one() == 5000
    engine.dispose()


def test_sqlite_ddl_is_transactional(sqlite_database: str):
    # The sqlite3 module would autocommit this CREATE TABLE; make_engine's BEGIN keeps it undone.
    engine = make_engine(sqlite_database)

    with engine.connect() as connection:
        connection.execute(text("CREATE TABLE abandoned (id INTEGER PRIMARY KEY)"))
        connection.rollback()

    with engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM sqlite_master WHERE name = 'abandoned'")).all() == []
    engine.dispose()


def test_constraint_names_follow_the_naming_convention():
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    parent = Table("parent", metadata, Column("id", Integer, primary_key=True))
    child = Table(
        "child",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("parent_id", ForeignKey(parent.c.id)),
        Column("serial", Integer),
        UniqueConstraint("parent_id", "serial"),
    )

    ddl = str(CreateTable(child).compile())

    assert "CONSTRAINT pk_child PRIMARY KEY" in ddl
    assert "CONSTRAINT uq_child_parent_id_serial UNIQUE" in ddl
    assert "CONSTRAINT fk_child_parent_id_parent FOREIGN KEY" in ddl
    assert Base.metadata.naming_convention == NAMING_CONVENTION


# --- sessions --------------------------------------------------------------------------------


def test_transaction_commits_and_records_stay_readable(engine: Engine):
    Scratch.metadata.create_all(engine)
    factory = make_session_factory(engine)

    with transaction(factory) as session:
        note = Note(id=1, body="committed")
        session.add(note)

    assert note.body == "committed"  # expire_on_commit=False: no detached-instance error
    with factory() as session:
        assert session.scalars(select(Note.body)).all() == ["committed"]


def test_transaction_rolls_back_when_the_block_raises(engine: Engine):
    Scratch.metadata.create_all(engine)
    factory = make_session_factory(engine)

    def write_then_fail() -> None:
        with transaction(factory) as session:
            session.add(Note(id=1, body="abandoned"))
            session.flush()
            raise LookupError

    with pytest.raises(LookupError):
        write_then_fail()

    with factory() as session:
        assert session.scalars(select(Note)).all() == []


# --- UtcDateTime -----------------------------------------------------------------------------


def test_datetimes_read_back_aware_in_utc(engine: Engine):
    Scratch.metadata.create_all(engine)
    factory = make_session_factory(engine)
    written = datetime(2025, 4, 1, 18, 30, 15, 123456, tzinfo=JST)

    with transaction(factory) as session:
        session.add_all([Note(id=1, body="dated", written_at=written), Note(id=2, body="undated")])

    with factory() as session:
        read, unset = session.scalars(select(Note.written_at).order_by(Note.id)).all()
    assert read == written
    assert read is not None
    assert read.tzinfo is UTC
    assert unset is None


def test_naive_datetime_is_refused(engine: Engine):
    Scratch.metadata.create_all(engine)
    factory = make_session_factory(engine)

    def write_naive() -> None:
        with transaction(factory) as session:
            session.add(Note(id=1, body="naive", written_at=datetime(2025, 4, 1, 9, 0)))  # noqa: DTZ001 - the point

    with pytest.raises(StatementError) as refused:
        write_naive()

    assert isinstance(refused.value.orig, ValueError)


def test_mapped_datetime_annotation_is_utc_datetime():
    assert isinstance(Base.registry.type_annotation_map[datetime], UtcDateTime)
