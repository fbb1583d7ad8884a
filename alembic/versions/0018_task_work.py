"""tasks that can be worked: assignee, snooze, how and by whom a task was closed

Revision ID: 0018
Revises: 0012
Create Date: 2026-12-05 10:00:00
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0018'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CAUSE_ENDED = 'cause_ended'


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('assignee', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True)
        )
        batch_op.add_column(sa.Column('snoozed_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column('closed_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True)
        )
        batch_op.add_column(
            sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=True)
        )
        batch_op.add_column(
            sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True)
        )
        batch_op.create_index(batch_op.f('ix_tasks_assignee'), ['assignee'], unique=False)

    bind = op.get_bind()
    # Every task's owner, as a new task gets it: the invoice's collector, else its customer's.
    bind.execute(
        sa.text(
            'UPDATE tasks SET assignee = COALESCE('
            "(SELECT NULLIF(TRIM(i.collector), '') FROM invoices i WHERE i.id = tasks.invoice_id), "
            "(SELECT NULLIF(TRIM(c.assigned_collector), '') FROM invoices i "
            ' JOIN customers c ON c.id = i.customer_id WHERE i.id = tasks.invoice_id))'
        )
    )

    # How closed tasks were closed, from the keys their closers wrote into data.
    tasks = sa.table(
        'tasks',
        sa.column('id', sa.Integer()),
        sa.column('status', sa.String()),
        sa.column('data', sa.JSON()),
        sa.column('closed_at', sa.DateTime(timezone=True)),
        sa.column('closed_by', sa.String()),
        sa.column('outcome', sa.String()),
        sa.column('note', sa.String()),
    )
    sqlite = bind.dialect.name == 'sqlite'
    rows = bind.execute(sa.select(tasks.c.id, tasks.c.data).where(tasks.c.status == 'done'))
    for task_id, data in rows.fetchall():
        values = _closed_values(data if isinstance(data, dict) else {}, sqlite)
        if values:
            bind.execute(sa.update(tasks).where(tasks.c.id == task_id).values(**values))


def _instant(value: Any, sqlite: bool) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.replace(tzinfo=None) if sqlite else at


def _text(value: Any, length: int) -> str | None:
    return str(value)[:length] if value not in (None, '') else None


def _closed_values(data: dict[str, Any], sqlite: bool) -> dict[str, Any]:
    """close_tasks wrote closed_reason/closed_at/closed_by; a call's outcome wrote
    outcome/by/at/note; the agency's later success wrote resolved."""
    if 'closed_reason' in data:
        found = {
            'outcome': CAUSE_ENDED,
            'note': _text(data.get('closed_reason'), 2000),
            'closed_at': _instant(data.get('closed_at'), sqlite),
            'closed_by': _text(data.get('closed_by'), 100),
        }
    elif 'outcome' in data:
        found = {
            'outcome': _text(data.get('outcome'), 50),
            'note': _text(data.get('note'), 2000),
            'closed_at': _instant(data.get('at'), sqlite),
            'closed_by': _text(data.get('by'), 100),
        }
    elif 'resolved' in data:
        found = {'outcome': CAUSE_ENDED, 'note': _text(data.get('resolved'), 2000)}
    else:
        return {}
    return {k: v for k, v in found.items() if v is not None}


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tasks_assignee'))
        batch_op.drop_column('note')
        batch_op.drop_column('outcome')
        batch_op.drop_column('closed_by')
        batch_op.drop_column('closed_at')
        batch_op.drop_column('snoozed_until')
        batch_op.drop_column('assignee')
