"""Webhooks: each client's webhook, and the outbox of signing events announced to it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25

Written by hand to match ``idp/webhooks/records.py``; a test compares the migrated schema with the
models on SQLite and PostgreSQL (alembic ``compare_metadata``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "client_webhooks",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["oidc_clients.client_id"],
            name=op.f("fk_client_webhooks_client_id_oidc_clients"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_client_webhooks")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("request_uri", sa.Text(), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("documents", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "event IN ('completed', 'declined', 'expired')", name=op.f("ck_webhook_deliveries_event"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'delivered', 'failed')", name=op.f("ck_webhook_deliveries_status"),
        ),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index("ix_webhook_deliveries_request_id", "webhook_deliveries", ["request_id"], unique=True)
    op.create_index("ix_webhook_deliveries_status_due_at", "webhook_deliveries", ["status", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_status_due_at", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_request_id", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("client_webhooks")
