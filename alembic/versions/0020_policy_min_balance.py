"""policy min balance

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 17:10:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0020'
down_revision: str | None = '0019'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing policies get 0: no minimum, as before. A plain ADD COLUMN (SQLite takes it with
    # a constant default): a batch copy would drop a table that invoices reference.
    op.add_column(
        'dunning_policies',
        sa.Column('min_balance_minor', sa.BigInteger(), nullable=False, server_default='0'),
    )


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+) for the same reason as above.
    op.drop_column('dunning_policies', 'min_balance_minor')
