"""policy versions: every policy's content kept as numbered, immutable versions; the version an
invoice runs

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-04 23:00:00.000000
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The fields of a policy's content (DunningPolicyCreate), as stored in a version's body.
CONTENT = (
    "name",
    "send_at",
    "escalate_after",
    "dispute_sla",
    "plan_grace",
    "plan_reminder_offset",
    "max_installments",
    "promise_grace",
    "resume_grace",
    "contact_window",
    "skip_weekends",
    "skip_holidays",
    "max_messages_per_day",
    "max_calls_per_week",
    "call_cooldown",
    "consolidate",
    "min_balance_minor",
    "dispute_credit_approval_minor",
    "portal_plan_max_installments",
    "portal_plan_first_within",
    "portal_plan_max_span",
    "portal_plan_min_installment_minor",
    "portal_promise_max",
    "steps",
    "ladder",
    "charges",
)
JSON_FIELDS = ("steps", "ladder", "charges")


def upgrade() -> None:
    op.add_column(
        "dunning_policies",
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    )
    versions = op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["policy_id"], ["dunning_policies.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("policy_id", "version"),
    )
    op.create_index("ix_policy_versions_policy_id", "policy_versions", ["policy_id"])
    op.add_column("invoices", sa.Column("policy_version", sa.Integer(), nullable=True))

    # Every existing policy's content becomes its version 1 (dated as the policy); its
    # invoices run version 1.
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "INSERT INTO policy_versions (policy_id, version, body, created_by, note, created_at)"
            " SELECT id, 1, '{}', 'migration', :note, created_at FROM dunning_policies"
        ),
        {"note": "the policy as it was when versions were introduced"},
    )
    columns = ", ".join(("id", *CONTENT))
    rows = bind.execute(sa.text(f"SELECT {columns} FROM dunning_policies")).mappings().all()
    for row in rows:
        body = {name: row[name] for name in CONTENT}
        for name in JSON_FIELDS:
            if isinstance(body[name], str):  # SQLite hands JSON back as text
                body[name] = json.loads(body[name])
        bind.execute(
            versions.update()
            .where(versions.c.policy_id == row["id"], versions.c.version == 1)
            .values(body=body)
        )
    bind.execute(sa.text("UPDATE invoices SET policy_version = 1"))


def downgrade() -> None:
    op.drop_column("invoices", "policy_version")
    op.drop_index("ix_policy_versions_policy_id", table_name="policy_versions")
    op.drop_table("policy_versions")
    op.drop_column("dunning_policies", "version")
