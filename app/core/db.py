"""Database engine and sessions: SQLite under the data dir by default, PostgreSQL from
FTGUARD_DATABASE_URL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Select, create_engine, event
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from app.core.errors import NotFound

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
T = TypeVar("T")


def owned(session: Session, model: type[T], key: Any, tenant_id: str, *, what: str, param: str) -> T:
    """The tenant's row of `model` with this primary key, or NotFound: another tenant's row is not found
    either, so an id never tells one tenant what another holds."""
    row = session.get(model, key)
    if row is None or getattr(row, "tenant_id", None) != tenant_id:
        raise NotFound(f"no {what} {key!r}", param=param)
    return row


def page(
    session: Session,
    q: Select[T],
    key: InstrumentedAttribute[Any],
    *,
    after: Any,
    limit: int,
    newest_first: bool = True,
) -> tuple[list[T], bool]:
    """One page of a list, by keyset on `key` (a unique column): the rows past `after` (the cursor, the
    last key of the previous page; None or "" for the first page), at most `limit`, and whether more follow.
    `newest_first` walks `key` downwards (ids that sort by creation time), else upwards."""
    if after is not None and after != "":
        q = q.where(key < after if newest_first else key > after)
    rows = list(session.scalars(q.order_by(key.desc() if newest_first else key).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


class _MigrationLog(logging.Filter):
    """Alembic logs "Running upgrade 0004 -> 0003", which reads like a downgrade: the ids are the order the
    migrations were written in, not the order they apply (0003 follows 0004). Say what happens instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith("Running upgrade "):
            head, _, about = msg.removeprefix("Running upgrade ").partition(", ")
            parent, _, rev = head.partition(" -> ")
            record.msg = f"applying schema migration {rev}" + (f" ({about})" if about else "")
            record.msg += f", which follows {parent}" if parent.strip() else ", the first"
            record.args = None
        return True


logging.getLogger("alembic.runtime.migration").addFilter(_MigrationLog())


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers don't block the worker's writes
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    # "heads": migrations written on parallel branches (say tenants in 0002 and rankings in 0004, both
    # after 0001) are independent, and each is applied.
    command.upgrade(alembic_config(url), "heads")


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessionmaker() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
