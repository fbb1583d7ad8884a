"""The database and the embedded Temporal store belong together.

Workflow ids are built from database ids (``invoice-{id}``): a new database beside an old
Temporal store would start its invoice 1 against the old ``invoice-1`` workflow (start refused,
no reminders). Each database has a deployment id (the ``deployment`` row, created by its first
migration); ``arflow run`` writes it beside the store it starts (``temporal.db.deployment``)
and refuses to start a store that another database wrote.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.errors import Conflict
from models import Deployment, Invoice

TEMPORAL_STORE = "temporal.db"
MARKER_SUFFIX = ".deployment"


class StoreMismatch(Conflict):
    """The Temporal store in the data folder belongs to another database."""

    default_code = "temporal_store_mismatch"


def deployment_id(engine: Engine) -> str:
    """This database's deployment id (created here when a database built without the
    migrations has none)."""
    with Session(engine) as session:
        row = session.exec(select(Deployment).order_by(col(Deployment.created_at))).first()
        if row is not None:
            return row.id
        session.add(Deployment(id=uuid.uuid4().hex))
        try:
            session.commit()
        except IntegrityError:  # pragma: no cover - a uuid4 collision
            session.rollback()
    return deployment_id(engine)


def has_invoices(engine: Engine) -> bool:
    with Session(engine) as session:
        return session.exec(select(Invoice.id).limit(1)).first() is not None


def bind_temporal_store(engine: Engine, data_dir: Path) -> str:
    """Check that ``data_dir``'s Temporal store belongs to this database and record that it
    does; the deployment id.

    Without a store (a first run, or the store removed) the marker is (re)written. A store
    without a marker was written before markers existed: it is taken as this
    database's when the database has invoices (an existing installation keeps its workflow
    ids); beside a database without invoices it is refused, as it may hold the workflows of
    a database that was deleted.

    Raises:
        StoreMismatch: the store belongs to another database, with what to do about it.
    """
    ours = deployment_id(engine)
    store = data_dir / TEMPORAL_STORE
    marker = data_dir / (TEMPORAL_STORE + MARKER_SUFFIX)
    remedy = (
        f"Either restore the database that belongs to it, or remove {store} (and {marker}) "
        "to start with an empty Temporal store: the workflows in it are lost."
    )
    if store.exists() and marker.exists():
        theirs = marker.read_text().strip()
        if theirs != ours:
            raise StoreMismatch(
                f"the Temporal store {store} belongs to another database (deployment "
                f"{theirs}); this database (ARFLOW_DATABASE_URL) is deployment {ours}. Its "
                f"workflow ids would collide with this database's invoices. {remedy}"
            )
        return ours
    if store.exists() and not has_invoices(engine):
        raise StoreMismatch(
            f"the Temporal store {store} was written before this database "
            "(ARFLOW_DATABASE_URL), which has no invoices: it may hold the workflows of a "
            f"deleted database, whose ids would collide with this database's invoices. {remedy}"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(ours + "\n")
    return ours
