"""Alembic environment of the durable store.

At run time ``idp.store.database.upgrade`` passes its connection, already inside the migration
transaction, in ``config.attributes["connection"]``. From the command line (writing a revision)
the database is ``-x url=...``, else the configured one (``idp.settings``)::

    alembic -c idp/store/migrations/alembic.ini -x url=sqlite:////tmp/head.sqlite3 upgrade head
    alembic -c idp/store/migrations/alembic.ini -x url=sqlite:////tmp/head.sqlite3 \
        revision --autogenerate -m "smartphone certificates"
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import TYPE_CHECKING, Literal

from alembic import context

import idp.store.models  # noqa: F401 - registers every concern's records on Base.metadata
from idp.settings import load_settings
from idp.store.database import Base, make_engine, migration_connection
from idp.store.types import UtcDateTime

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext
    from sqlalchemy.engine import Connection


def _render_item(kind: str, item: object, _autogen_context: AutogenContext) -> str | Literal[False]:
    """Write application column types as their database type, so revisions import no app code."""
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,  # make_engine has SQLite emit BEGIN, so its DDL is transactional too
        render_item=_render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_offline() -> None:
    url = context.get_x_argument(as_dictionary=True).get("url") or load_settings().effective_database_url
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
        transactional_ddl=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run_migrations(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or load_settings().effective_database_url
    engine = make_engine(url)
    try:
        with migration_connection(engine) as own_connection:
            _run_migrations(own_connection)
    finally:
        engine.dispose()


if context.config.config_file_name is not None and "connection" not in context.config.attributes:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
