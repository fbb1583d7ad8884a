"""read indexes: customers(segment); invoices(collector, status, due_at)

At 100,000 invoices on PostgreSQL (bench/explain_reads.py, bench/README.md "Issue 19"): the
invoice list filtered by segment read every customer (Seq Scan on customers); the overdue
invoices of one collector were counted from a bitmap of the collector's 25,000 rows and their
heap pages (154 ms), now from this index alone (0.7 ms).

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-05 22:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_customers_segment", "customers", ["segment"], unique=False)
    op.create_index(
        "ix_invoices_collector_status_due_at",
        "invoices",
        ["collector", "status", "due_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_invoices_collector_status_due_at", table_name="invoices")
    op.drop_index("ix_customers_segment", table_name="customers")
