"""OIDC grants, their rotating refresh tokens (stored hashed), and attribute consents.

Revision ID: 0003
Revises: 0002
Create Date: 2025-11-26

Written by hand to match ``idp/oidc/grants_records.py``; a test compares the migrated schema
with the models on SQLite and PostgreSQL (alembic ``compare_metadata``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oidc_grants",
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("claims", sa.JSON(), nullable=True),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amr", sa.JSON(), nullable=False),
        sa.Column("acr", sa.String(length=128), nullable=True),
        sa.Column("consented_attributes", sa.JSON(), nullable=False),
        sa.Column("signature_certificate_serial", sa.String(length=48), nullable=True),
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"], ["oidc_clients.client_id"],
            name=op.f("fk_oidc_grants_client_id_oidc_clients"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("grant_id", name=op.f("pk_oidc_grants")),
    )
    op.create_index("ix_oidc_grants_person_id_client_id", "oidc_grants", ["person_id", "client_id"])
    op.create_table(
        "oidc_refresh_tokens",
        sa.Column("token_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["grant_id"], ["oidc_grants.grant_id"],
            name=op.f("fk_oidc_refresh_tokens_grant_id_oidc_grants"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_sha256", name=op.f("pk_oidc_refresh_tokens")),
    )
    op.create_index("ix_oidc_refresh_tokens_grant_id", "oidc_refresh_tokens", ["grant_id"])
    op.create_table(
        "oidc_consents",
        sa.Column("consent_id", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"], ["oidc_clients.client_id"],
            name=op.f("fk_oidc_consents_client_id_oidc_clients"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("consent_id", name=op.f("pk_oidc_consents")),
    )
    op.create_index("ix_oidc_consents_person_id_client_id", "oidc_consents", ["person_id", "client_id"])


def downgrade() -> None:
    op.drop_index("ix_oidc_consents_person_id_client_id", table_name="oidc_consents")
    op.drop_table("oidc_consents")
    op.drop_index("ix_oidc_refresh_tokens_grant_id", table_name="oidc_refresh_tokens")
    op.drop_table("oidc_refresh_tokens")
    op.drop_index("ix_oidc_grants_person_id_client_id", table_name="oidc_grants")
    op.drop_table("oidc_grants")
