"""The portal's certificate records: issued certificates, their sources, CRL counters and CRLs.

Revision ID: 0001
Revises:
Create Date: 2025-11-25

Written by hand to match ``idp/pki/records.py``; a test compares the migrated schema with the
models on SQLite and PostgreSQL (alembic ``compare_metadata``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pki_certificates",
        sa.Column("authority", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=48), nullable=False),
        sa.Column("profile", sa.String(length=32), nullable=False),
        sa.Column("subject_key_id", sa.LargeBinary(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("state IN ('good', 'revoked', 'on_hold')", name=op.f("ck_pki_certificates_state")),
        sa.CheckConstraint(
            "(state = 'good' AND reason IS NULL AND revoked_at IS NULL)"
            " OR (state <> 'good' AND reason IS NOT NULL AND revoked_at IS NOT NULL)",
            name=op.f("ck_pki_certificates_revocation"),
        ),
        sa.PrimaryKeyConstraint("authority", "serial", name=op.f("pk_pki_certificates")),
    )
    op.create_index("ix_pki_certificates_authority_state", "pki_certificates", ["authority", "state"])
    op.create_index("ix_pki_certificates_subject_key_id", "pki_certificates", ["subject_key_id"])

    op.create_table(
        "pki_certificate_sources",
        sa.Column("authority", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=48), nullable=False),
        sa.Column("source_issuer_key_id", sa.LargeBinary(), nullable=False),
        sa.Column("source_serial", sa.String(length=48), nullable=False),
        sa.ForeignKeyConstraint(
            ["authority", "serial"],
            ["pki_certificates.authority", "pki_certificates.serial"],
            name=op.f("fk_pki_certificate_sources_authority_serial_pki_certificates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "authority", "serial", "source_issuer_key_id", "source_serial",
            name=op.f("pk_pki_certificate_sources"),
        ),
    )
    op.create_index(
        "ix_pki_certificate_sources_source",
        "pki_certificate_sources",
        ["source_issuer_key_id", "source_serial"],
    )

    op.create_table(
        "pki_crl_counters",
        sa.Column("authority", sa.String(length=64), nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("authority", name=op.f("pk_pki_crl_counters")),
    )

    op.create_table(
        "pki_crls",
        sa.Column("authority", sa.String(length=64), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("this_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("authority", name=op.f("pk_pki_crls")),
    )


def downgrade() -> None:
    op.drop_table("pki_crls")
    op.drop_table("pki_crl_counters")
    op.drop_index("ix_pki_certificate_sources_source", table_name="pki_certificate_sources")
    op.drop_table("pki_certificate_sources")
    op.drop_index("ix_pki_certificates_subject_key_id", table_name="pki_certificates")
    op.drop_index("ix_pki_certificates_authority_state", table_name="pki_certificates")
    op.drop_table("pki_certificates")
