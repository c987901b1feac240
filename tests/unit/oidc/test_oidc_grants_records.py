"""The migrations create exactly the OIDC grant, refresh-token and consent models, and go back cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData

import idp.store.models  # noqa: F401 - every record on Base.metadata
from idp.store.database import Base, alembic_config, make_engine, migration_connection

TABLES = ("oidc_clients", "oidc_grants", "oidc_refresh_tokens", "oidc_consents")


def test_migrations_create_exactly_the_grant_models(database_url: str) -> None:
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        if table.name in TABLES:
            table.to_metadata(metadata)
    engine = make_engine(database_url)
    try:
        with migration_connection(engine) as connection:
            command.upgrade(alembic_config(connection), "head")
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
        assert [difference for difference in differences if "oidc_" in repr(difference)
                and not _another_table(difference)] == []
        with migration_connection(engine) as connection:
            command.downgrade(alembic_config(connection), "0002")
    finally:
        engine.dispose()


def _another_table(difference: object) -> bool:
    """A table outside the grant models (it may refer to oidc_clients), which the copied metadata lacks."""
    match difference:
        case ("remove_table", table):
            return table.name not in TABLES
    return False
