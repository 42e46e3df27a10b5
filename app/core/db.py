"""Database engine and sessions: SQLite under the data dir by default, PostgreSQL from
FTGUARD_DATABASE_URL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


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
