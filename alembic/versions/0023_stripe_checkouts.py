"""stripe checkouts (card payments from the customer portal)

Revision ID: 0023
Revises: 0021
Create Date: 2026-12-04 19:30:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0023'
down_revision: str | None = '0022'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('stripe_checkouts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('allocations', sa.JSON(), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('payment_intent_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('refunded_minor', sa.BigInteger(), nullable=False),
    sa.Column('reversed_minor', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(
        op.f('ix_stripe_checkouts_session_id'), 'stripe_checkouts', ['session_id'], unique=True
    )
    op.create_index(
        op.f('ix_stripe_checkouts_customer_id'), 'stripe_checkouts', ['customer_id'], unique=False
    )
    op.create_index(
        op.f('ix_stripe_checkouts_payment_intent_id'),
        'stripe_checkouts',
        ['payment_intent_id'],
        unique=False,
    )
    op.create_table('stripe_reversals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('checkout_id', sa.Integer(), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('allocations', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['checkout_id'], ['stripe_checkouts.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    op.create_index(
        op.f('ix_stripe_reversals_checkout_id'), 'stripe_reversals', ['checkout_id'], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_stripe_reversals_checkout_id'), table_name='stripe_reversals')
    op.drop_table('stripe_reversals')
    op.drop_index(op.f('ix_stripe_checkouts_payment_intent_id'), table_name='stripe_checkouts')
    op.drop_index(op.f('ix_stripe_checkouts_customer_id'), table_name='stripe_checkouts')
    op.drop_index(op.f('ix_stripe_checkouts_session_id'), table_name='stripe_checkouts')
    op.drop_table('stripe_checkouts')
