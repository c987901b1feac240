"""The device a grant was issued on, so revoking the device revokes its grants.

Revision ID: 0005
Revises: 0004
Create Date: 2025-11-27

Written by hand to match ``idp/oidc/grants_records.py``; a test compares the migrated schema
with the models on SQLite and PostgreSQL (alembic ``compare_metadata``). Grants made before
this revision have no device (NULL): they are not found by device.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("oidc_grants") as batch:
        batch.add_column(sa.Column("device_id", sa.String(length=32), nullable=True))
    op.create_index("ix_oidc_grants_device_id", "oidc_grants", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_oidc_grants_device_id", table_name="oidc_grants")
    with op.batch_alter_table("oidc_grants") as batch:
        batch.drop_column("device_id")
