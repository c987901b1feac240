"""Storage engines: the durable store (SQLAlchemy, Alembic) and the ephemeral store (Redis).

The engines only: each concern keeps its own records (``idp.pki.records``) and registers them
in ``idp.store.models``.
"""

from idp.store.database import (
    Base,
    SchemaMigrationError,
    current_revision,
    head_revision,
    make_engine,
    make_session_factory,
    transaction,
    upgrade,
)
from idp.store.ephemeral import (
    CounterStore,
    EphemeralStore,
    EphemeralStoreError,
    EphemeralStoreUnavailable,
    KeyValueStore,
    MemoryEphemeralStore,
    OneTimeStore,
    RedisEphemeralStore,
    open_ephemeral_store,
)
from idp.store.types import UtcDateTime

__all__ = [
    "Base",
    "CounterStore",
    "EphemeralStore",
    "EphemeralStoreError",
    "EphemeralStoreUnavailable",
    "KeyValueStore",
    "MemoryEphemeralStore",
    "OneTimeStore",
    "RedisEphemeralStore",
    "SchemaMigrationError",
    "UtcDateTime",
    "current_revision",
    "head_revision",
    "make_engine",
    "make_session_factory",
    "open_ephemeral_store",
    "transaction",
    "upgrade",
]
