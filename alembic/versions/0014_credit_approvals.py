"""credit approvals (four eyes on dispute credits) and the policy's threshold

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-03 14:30:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0014'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('dunning_policies', schema=None) as batch_op:
        # Existing policies get 0: every dispute credit by a specialist needs approval.
        batch_op.add_column(
            sa.Column('dispute_credit_approval_minor', sa.BigInteger(), nullable=True, server_default='0')
        )
    op.create_table(
        'credit_approvals',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('invoice_id', sa.Integer(), nullable=False),
        sa.Column('dispute_id', sa.Integer(), nullable=False),
        sa.Column('credit_minor', sa.BigInteger(), nullable=False),
        sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column('requested_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('decided_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('decision_note', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
        sa.Column('task_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['dispute_id'], ['disputes.id'], ),
        sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], ),
        sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], ),
        sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('credit_approvals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_credit_approvals_dispute_id'), ['dispute_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_credit_approvals_invoice_id'), ['invoice_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_credit_approvals_status'), ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('credit_approvals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_credit_approvals_status'))
        batch_op.drop_index(batch_op.f('ix_credit_approvals_invoice_id'))
        batch_op.drop_index(batch_op.f('ix_credit_approvals_dispute_id'))
    op.drop_table('credit_approvals')
    with op.batch_alter_table('dunning_policies', schema=None) as batch_op:
        batch_op.drop_column('dispute_credit_approval_minor')
