"""collectors: the managed list of collectors, seeded from the free-text assignments

Revision ID: 0016
Revises: 0011
Create Date: 2026-12-03 14:30:00
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0016'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    collectors = op.create_table(
        'collectors',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('email'),
    )
    with op.batch_alter_table('collectors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_collectors_name'), ['name'], unique=False)

    # Every collector already assigned (to a customer or an invoice) joins the list, so no
    # assignment and no Reply-To that worked before stops working: a value with an @ is a
    # collector with that address, any other a collector known by name only (no Reply-To).
    bind = op.get_bind()
    values: list[str] = []
    for table, column in (('customers', 'assigned_collector'), ('invoices', 'collector')):
        rows = bind.execute(
            sa.text(f'SELECT DISTINCT {column} FROM {table} WHERE {column} IS NOT NULL')
        )
        values += [str(r[0]).strip() for r in rows if r[0] is not None and str(r[0]).strip()]
    seen: set[str] = set()
    now = datetime.now(UTC)
    stamp = now.replace(tzinfo=None) if bind.dialect.name == 'sqlite' else now
    new_rows = []
    for value in sorted(values):
        key = value.lower() if '@' in value else value
        if key in seen:
            continue
        seen.add(key)
        email = value.lower()[:320] if '@' in value else None
        new_rows.append({'name': value[:100], 'email': email, 'active': True, 'created_at': stamp})
    if new_rows:
        op.bulk_insert(collectors, new_rows)


def downgrade() -> None:
    with op.batch_alter_table('collectors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_collectors_name'))

    op.drop_table('collectors')
