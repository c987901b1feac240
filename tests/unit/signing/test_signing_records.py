"""The migrations create exactly the signing-results model, and go back cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect

import idp.store.models  # noqa: F401 - every record on Base.metadata
from idp.store.database import Base, alembic_config, make_engine, migration_connection


def test_migrations_create_exactly_the_signing_results_model(database_url: str) -> None:
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    Base.metadata.tables["signature_results"].to_metadata(metadata)
    engine = make_engine(database_url)
    try:
        with migration_connection(engine) as connection:
            command.upgrade(alembic_config(connection), "head")
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
        assert [difference for difference in differences if "signature_results" in repr(difference)] == []
        with migration_connection(engine) as connection:
            command.downgrade(alembic_config(connection), "0008")
        assert "signature_results" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
