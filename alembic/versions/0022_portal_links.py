"""customer portal: link revocation and fresh-link requests

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04 19:40:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0022'
down_revision: str | None = '0021'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (nullable): a batch copy would drop a table others reference.
    op.add_column(
        'customers', sa.Column('portal_links_from', sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table('portal_link_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('provider_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(
        op.f('ix_portal_link_requests_customer_id'),
        'portal_link_requests',
        ['customer_id'],
        unique=False,
    )
    op.create_index(
        op.f('ix_portal_link_requests_requested_at'),
        'portal_link_requests',
        ['requested_at'],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_portal_link_requests_requested_at'), table_name='portal_link_requests')
    op.drop_index(op.f('ix_portal_link_requests_customer_id'), table_name='portal_link_requests')
    op.drop_table('portal_link_requests')
    op.drop_column('customers', 'portal_links_from')
