"""J-LIS linking data: the links received and the feed's cursor.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25

Written by hand to match ``idp/ceremonies/linking_records.py``; a test compares the migrated
schema with the models on SQLite and PostgreSQL (alembic ``compare_metadata``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jlis_links",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("first_kind", sa.String(length=8), nullable=False),
        sa.Column("first_issuer_key_id", sa.LargeBinary(), nullable=False),
        sa.Column("first_serial", sa.String(length=48), nullable=False),
        sa.Column("second_kind", sa.String(length=8), nullable=False),
        sa.Column("second_issuer_key_id", sa.LargeBinary(), nullable=False),
        sa.Column("second_serial", sa.String(length=48), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('same_person', 'successor')", name=op.f("ck_jlis_links_kind")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_jlis_links")),
    )
    op.create_index("ix_jlis_links_first", "jlis_links", ["first_issuer_key_id", "first_serial"])
    op.create_index("ix_jlis_links_second", "jlis_links", ["second_issuer_key_id", "second_serial"])

    op.create_table(
        "jlis_linking_cursor",
        sa.Column("feed", sa.String(length=16), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("feed", name=op.f("pk_jlis_linking_cursor")),
    )


def downgrade() -> None:
    op.drop_table("jlis_linking_cursor")
    op.drop_index("ix_jlis_links_second", table_name="jlis_links")
    op.drop_index("ix_jlis_links_first", table_name="jlis_links")
    op.drop_table("jlis_links")
