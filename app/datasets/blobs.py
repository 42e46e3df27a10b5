"""Lifetime of the shared, content-addressed dataset blobs under concurrency.

Tenants share a blob when they upload the same bytes. Placing a blob and removing one both start by
writing the blob's row in `blob_locks` (an upsert): PostgreSQL holds that row lock, SQLite its database
write lock, until the transaction ends. An upload places the bytes and commits its dataset row inside one
such transaction; a removal re-checks, inside another, that no dataset row uses the bytes before it
unlinks them. So a delete can never remove a blob that a concurrent upload is committing a row for:
whichever comes second sees the first one's outcome. Removal never happens inside the deleting request's
own transaction: `sweep` runs after that commit (and the reconciler's orphan pass uses it too).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.core.storage import BlobStore, dataset_key
from app.models import BlobLock, Dataset, now


def lock(session: Session, key: str) -> None:
    """Take the blob's lock for the rest of the transaction (creating its row when new)."""
    dialect = session.get_bind().dialect.name
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(BlobLock)
    session.execute(
        ins.values(key=key, touched_at=now()).on_conflict_do_update(
            index_elements=["key"], set_={"touched_at": now()}
        )
    )


def place(session: Session, store: BlobStore, sha256: str, staged: Path) -> None:
    """Move the staged bytes into place under the lock; the caller adds its dataset row and commits."""
    key = dataset_key(sha256)
    lock(session, key)
    # Renamed into place even over identical bytes: the rename is atomic, so readers see either file whole.
    store.put_file(key, staged)


def sweep(session: Session, store: BlobStore, sha256: str) -> bool:
    """Remove the blob unless a dataset row uses it (checked under the lock); True when removed. Commits:
    call it after the caller's own transaction has been committed."""
    key = dataset_key(sha256)
    session.commit()  # never inside the caller's transaction
    lock(session, key)
    if session.scalar(select(Dataset.id).where(Dataset.sha256 == sha256).limit(1)) is not None:
        session.rollback()
        return False
    store.delete(key)
    session.execute(delete(BlobLock).where(BlobLock.key == key))
    session.commit()
    return True
