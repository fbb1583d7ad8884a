"""deployment id; per-account counts of statement imports

Revision ID: 0017
Revises: 0011
Create Date: 2026-12-03 14:20:00.000000
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0017'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    deployment = op.create_table(
        'deployment',
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    # The database's identity, created once: `arflow run` ties the Temporal store to it.
    op.bulk_insert(deployment, [{'id': uuid.uuid4().hex, 'created_at': datetime.now(UTC)}])
    with op.batch_alter_table('statement_imports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('accounts', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('statement_imports', schema=None) as batch_op:
        batch_op.drop_column('accounts')
    op.drop_table('deployment')
