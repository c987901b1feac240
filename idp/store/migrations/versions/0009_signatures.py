"""Signing results: the documents a phone signed for a relying party, read with its access token.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25

Written by hand to match ``idp/signing/records.py``; a test compares the migrated schema with the
models on SQLite and PostgreSQL (alembic ``compare_metadata``). (0009, not the 0008 first planned:
``0008_post_logout_redirect_uris`` took that number while this was written.)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signature_results",
        sa.Column("result_id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("signature_format", sa.String(length=8), nullable=False),
        sa.Column("cms", sa.LargeBinary(), nullable=True),
        sa.Column("signed_pdf", sa.LargeBinary(), nullable=True),
        sa.Column("assertion", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("result_id", name=op.f("pk_signature_results")),
    )
    op.create_index("ix_signature_results_request_id", "signature_results", ["request_id"])
    op.create_index("ix_signature_results_grant_id", "signature_results", ["grant_id"])


def downgrade() -> None:
    op.drop_index("ix_signature_results_grant_id", table_name="signature_results")
    op.drop_index("ix_signature_results_request_id", table_name="signature_results")
    op.drop_table("signature_results")
