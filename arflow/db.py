"""Database engine and sessions (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, create_engine

from arflow.errors import conflict

R = TypeVar("R", bound=SQLModel)
SessionFactory = Callable[[], AbstractContextManager[Session]]


#: Seconds to wait for PostgreSQL to answer a new connection. A server that accepts the TCP
#: connection and then says nothing (its host gone from the network, a stuck proxy) would
#: otherwise hold a request, or an activity's thread, until the operating system gives up.
CONNECT_TIMEOUT_SECONDS = 5

#: Connections kept open per process. The worker runs 16 activity threads and the API's
#: threadpool runs synchronous routes beside them: with SQLAlchemy's default of 5 every burst
#: opened and closed overflow connections (and ran SQLite's pragmas again for each), about 2%
#: of the worker's CPU in bench/lifecycle.py. Overflow stays for rare peaks; the total per
#: process (30) is what it was, so PostgreSQL's connection budget in docs/scaling.md holds.
POOL_SIZE = 20
MAX_OVERFLOW = 10


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever scheme the operator wrote."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            **(_file_pool(url) | kwargs),
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if "connect_timeout=" not in url:  # the operator's own value wins
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS} | kwargs.pop("connect_args", {})
        kwargs["connect_args"] = connect_args
    return create_engine(
        url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, **kwargs
    )


def _file_pool(url: str) -> dict[str, Any]:
    """The pool sizes for a SQLite file; an in-memory database keeps SQLAlchemy's one
    connection per thread (its pool takes no sizes)."""
    if make_url(url).database in (None, "", ":memory:"):
        return {}
    return {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW}


def session_factory(engine: Engine) -> SessionFactory:
    def factory() -> Session:
        return Session(engine, expire_on_commit=False)

    return factory


def sessions(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


def insert_unique(session: Session, row: R, taken: str) -> R:
    """Insert ``row``; a unique key already taken is a 409 saying ``taken``."""
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise conflict(taken) from None
    session.refresh(row)
    return row
