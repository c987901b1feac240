"""The OAuth client registry: one row per registered relying party.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-25

Written by hand to match ``idp/oidc/records.py``; a test compares the migrated schema with the
models on SQLite and PostgreSQL (alembic ``compare_metadata``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oidc_clients",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("redirect_uris", sa.JSON(), nullable=False),
        sa.Column("token_endpoint_auth_method", sa.String(length=32), nullable=False),
        sa.Column("client_secret_sha256", sa.LargeBinary(), nullable=True),
        sa.Column("jwks", sa.JSON(), nullable=True),
        sa.Column("jwks_uri", sa.Text(), nullable=True),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("require_pushed_authorization_requests", sa.Boolean(), nullable=False),
        sa.Column("id_token_signed_response_alg", sa.String(length=8), nullable=False),
        sa.Column("sector_identifier", sa.String(length=253), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "token_endpoint_auth_method IN ('client_secret_basic', 'private_key_jwt')",
            name=op.f("ck_oidc_clients_auth_method"),
        ),
        sa.CheckConstraint(
            "id_token_signed_response_alg IN ('ES256', 'RS256')",
            name=op.f("ck_oidc_clients_id_token_alg"),
        ),
        sa.CheckConstraint(
            "(token_endpoint_auth_method = 'client_secret_basic'"
            " AND client_secret_sha256 IS NOT NULL AND jwks IS NULL AND jwks_uri IS NULL)"
            " OR (token_endpoint_auth_method = 'private_key_jwt'"
            " AND client_secret_sha256 IS NULL AND (jwks IS NULL) <> (jwks_uri IS NULL))",
            name=op.f("ck_oidc_clients_credentials"),
        ),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_oidc_clients")),
    )


def downgrade() -> None:
    op.drop_table("oidc_clients")
