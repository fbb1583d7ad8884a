"""champion / challenger experiments: the experiments table, a segment's running experiment and
the arm each new invoice was assigned to

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-04 22:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0026"
# After 0025 (policy versions), merged from main.
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("segment", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
        sa.Column("champion_policy", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("champion_version", sa.Integer(), nullable=True),
        sa.Column(
            "challenger_policy", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False
        ),
        sa.Column("challenger_version", sa.Integer(), nullable=False),
        sa.Column("share_pct", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
        sa.Column("promoted_version", sa.Integer(), nullable=True),
        sa.Column("switch_job_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_experiments_segment"), "experiments", ["segment"], unique=False)
    # Plain ADD COLUMNs (nullable or with a constant default, no foreign key): no batch copy of
    # tables that others reference, with SQLite's foreign keys on.
    op.add_column(
        "segments",
        sa.Column("challenger_policy", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    )
    op.add_column("segments", sa.Column("challenger_version", sa.Integer(), nullable=True))
    op.add_column(
        "segments",
        sa.Column("challenger_share_pct", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column("segments", sa.Column("experiment_id", sa.Integer(), nullable=True))
    op.add_column("invoices", sa.Column("experiment_id", sa.Integer(), nullable=True))
    op.add_column(
        "invoices",
        sa.Column("experiment_arm", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=True),
    )
    op.create_index(op.f("ix_invoices_experiment_id"), "invoices", ["experiment_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_invoices_experiment_id"), table_name="invoices")
    op.drop_column("invoices", "experiment_arm")
    op.drop_column("invoices", "experiment_id")
    op.drop_column("segments", "experiment_id")
    op.drop_column("segments", "challenger_share_pct")
    op.drop_column("segments", "challenger_version")
    op.drop_column("segments", "challenger_policy")
    op.drop_index(op.f("ix_experiments_segment"), table_name="experiments")
    op.drop_table("experiments")
