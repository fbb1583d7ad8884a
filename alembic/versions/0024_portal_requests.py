"""portal requests: policy bounds for customer requests, dispute attachments, plan proposals

Revision ID: 0024
Revises: 0021
Create Date: 2026-12-04 19:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = "0024"
# The lead re-chains 0022 -> 0023 -> 0024 when merging the portal's branches.
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POLICY_COLUMNS = (
    ("portal_plan_max_installments", sa.Integer(), "6"),
    ("portal_plan_first_within", sa.String(length=40), "P30D"),
    ("portal_plan_max_span", sa.String(length=40), "P180D"),
    ("portal_plan_min_installment_minor", sa.BigInteger(), "1000"),
    ("portal_promise_max", sa.String(length=40), "P30D"),
)


def upgrade() -> None:
    # Plain ADD COLUMN with constant server defaults: existing policies get the defaults, and
    # no batch copy of a table that invoices reference (SQLite runs with foreign keys on).
    for name, type_, default in POLICY_COLUMNS:
        op.add_column(
            "dunning_policies",
            sa.Column(name, type_, nullable=False, server_default=default),
        )
    op.create_table(
        "dispute_attachments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("dispute_id", sa.Integer(), nullable=True),
        sa.Column("filename", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("content_type", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("stored_name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dispute_id"],
            ["disputes.id"],
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_dispute_attachments_dispute_id"),
        "dispute_attachments",
        ["dispute_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_dispute_attachments_invoice_id"),
        "dispute_attachments",
        ["invoice_id"],
        unique=False,
    )
    op.create_table(
        "plan_proposals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("installments", sa.JSON(), nullable=False),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column("out_of_bounds", sa.JSON(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("decided_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_plan_proposals_invoice_id"), "plan_proposals", ["invoice_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_plan_proposals_invoice_id"), table_name="plan_proposals")
    op.drop_table("plan_proposals")
    op.drop_index(op.f("ix_dispute_attachments_invoice_id"), table_name="dispute_attachments")
    op.drop_index(op.f("ix_dispute_attachments_dispute_id"), table_name="dispute_attachments")
    op.drop_table("dispute_attachments")
    # A plain DROP COLUMN (SQLite 3.35+), as the upgrade.
    for name, _, _ in reversed(POLICY_COLUMNS):
        op.drop_column("dunning_policies", name)
