"""Where RP-initiated logout may send the browser back to: a client's post-logout redirect URIs.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25

Written by hand to match ``idp/oidc/records.py``; a test compares the migrated schema with the
models on SQLite and PostgreSQL (alembic ``compare_metadata``). Clients registered before this
revision have none (``[]``): their logouts end on the portal's own page. (0008, not the 0007 first
planned: ``0007_audit`` took that number while this was written.)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("oidc_clients") as batch:
        batch.add_column(
            sa.Column("post_logout_redirect_uris", sa.JSON(), server_default=sa.text("'[]'"), nullable=False),
        )


def downgrade() -> None:
    with op.batch_alter_table("oidc_clients") as batch:
        batch.drop_column("post_logout_redirect_uris")
