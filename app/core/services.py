"""The long-lived objects a process needs: settings, database and blob store, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import Database, migrate
from app.core.queue import JobQueue
from app.core.storage import BlobStore, open_store


@dataclass
class Services:
    settings: Settings
    db: Database
    store: BlobStore

    def close(self) -> None:
        self.db.dispose()


def build_services(settings: Settings, *, run_migrations: bool = True) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if run_migrations:
        migrate(settings.sqlalchemy_url)
    return Services(settings=settings, db=Database(settings.sqlalchemy_url), store=open_store(settings))


@dataclass(frozen=True)
class Ctx:
    """What a use case that creates runs is called with: the caller's tenant, its SQL session (the caller
    commits or the use case does, as it says), the queue the runs go to and the provider's settings."""

    session: Session
    queue: JobQueue
    settings: Settings
    tenant_id: str
