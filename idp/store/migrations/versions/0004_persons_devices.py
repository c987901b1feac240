"""Persons, the card certificates that identify them, their devices, and fetched J-LIS CRLs.

Revision ID: 0004
Revises: 0003
Create Date: 2025-11-26

Written by hand to match ``idp/ceremonies/records.py``; a test compares the migrated schema with
the models on SQLite and PostgreSQL (alembic ``compare_metadata``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "persons",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_persons")),
    )

    op.create_table(
        "person_card_certificates",
        sa.Column("issuer_key_id", sa.LargeBinary(), nullable=False),
        sa.Column("serial", sa.String(length=48), nullable=False),
        sa.Column("person_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("linked_by", sa.String(length=16), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('auth', 'sign')", name=op.f("ck_person_card_certificates_kind")),
        sa.CheckConstraint(
            "linked_by IN ('enrollment', 'jlis_linking')", name=op.f("ck_person_card_certificates_linked_by"),
        ),
        sa.ForeignKeyConstraint(
            ["person_id"], ["persons.id"],
            name=op.f("fk_person_card_certificates_person_id_persons"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("issuer_key_id", "serial", name=op.f("pk_person_card_certificates")),
    )
    op.create_index(
        op.f("ix_person_card_certificates_person_id"), "person_card_certificates", ["person_id"],
    )

    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("person_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("aaguid", sa.String(length=36), nullable=False),
        sa.Column("auth_credential_id", sa.LargeBinary(), nullable=False),
        sa.Column("auth_public_key", sa.LargeBinary(), nullable=False),
        sa.Column("auth_sign_count", sa.BigInteger(), nullable=False),
        sa.Column("sign_credential_id", sa.LargeBinary(), nullable=False),
        sa.Column("sign_public_key", sa.LargeBinary(), nullable=False),
        sa.Column("auth_certificate_serial", sa.String(length=48), nullable=False),
        sa.Column("sign_certificate_serial", sa.String(length=48), nullable=False),
        sa.CheckConstraint("status IN ('active', 'revoked')", name=op.f("ck_devices_status")),
        sa.CheckConstraint("(status = 'active') = (revoked_at IS NULL)", name=op.f("ck_devices_revocation")),
        sa.ForeignKeyConstraint(
            ["person_id"], ["persons.id"], name=op.f("fk_devices_person_id_persons"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("auth_credential_id", name=op.f("uq_devices_auth_credential_id")),
        sa.UniqueConstraint("sign_credential_id", name=op.f("uq_devices_sign_credential_id")),
    )
    op.create_index(op.f("ix_devices_person_id"), "devices", ["person_id"])

    op.create_table(
        "jlis_crls",
        sa.Column("issuer_key_id", sa.LargeBinary(), nullable=False),
        sa.Column("issuer_name", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("this_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("issuer_key_id", name=op.f("pk_jlis_crls")),
    )


def downgrade() -> None:
    op.drop_table("jlis_crls")
    op.drop_index(op.f("ix_devices_person_id"), table_name="devices")
    op.drop_table("devices")
    op.drop_index(op.f("ix_person_card_certificates_person_id"), table_name="person_card_certificates")
    op.drop_table("person_card_certificates")
    op.drop_table("persons")
