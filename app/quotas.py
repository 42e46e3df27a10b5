"""Per-tenant quotas shared by several services: the tenant lock, daily usage, upload slots, storage.

Every check that counts a tenant's rows and then adds one runs under `lock_tenant`, a write to the tenant's
row: on PostgreSQL a row lock, on SQLite the database write lock, held until the caller commits. So two
concurrent requests of one tenant cannot both read "one slot left" and both take it.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import Database
from app.core.errors import PayloadTooLarge, TooManyRequests
from app.models import Dataset, Tenant, TenantUsage, UploadLease, new_id, now

log = logging.getLogger("ftguard.api")
DAY_S = 86_400
UPLOAD_RETRY_AFTER_S = 5


def lock_tenant(session: Session, tenant_id: str) -> None:
    """Serialise the tenant's quota checks until the caller commits (see the module docstring)."""
    session.execute(update(Tenant).where(Tenant.id == tenant_id).values(name=Tenant.name))


def today() -> int:
    return now() // DAY_S


def seconds_to_tomorrow() -> int:
    return DAY_S - now() % DAY_S


def usage_today(session: Session, tenant_id: str) -> TenantUsage:
    """The tenant's usage row of today (added to the session when it is new)."""
    row = session.get(TenantUsage, (tenant_id, today()))
    if row is None:
        row = TenantUsage(tenant_id=tenant_id, day=today(), judge_calls=0, compute_tokens=0)
        session.add(row)
    return row


# ---------------------------------------------------------------- uploads


def take_upload_slot(db: Database, settings: Settings, tenant_id: str) -> str:
    """Take one of the tenant's `max_concurrent_uploads` upload slots, for the whole upload (body, checks,
    validation); 429 `too_many_concurrent_uploads` when none is free. Slots are rows, so every API replica
    counts them; returns the slot's id for `give_upload_slot`."""
    lease = new_id("upl")
    with db.session() as session:
        lock_tenant(session, tenant_id)
        session.execute(delete(UploadLease).where(UploadLease.started_at < now() - settings.upload_lease_s))
        held = session.scalar(
            select(func.count()).select_from(UploadLease).where(UploadLease.tenant_id == tenant_id)
        )
        if (held or 0) >= settings.max_concurrent_uploads:
            session.rollback()
            raise TooManyRequests(
                f"{held} uploads of this tenant are being processed; at most "
                f"{settings.max_concurrent_uploads} may be at once; retry when one has finished",
                retry_after=UPLOAD_RETRY_AFTER_S,
                code="too_many_concurrent_uploads",
            )
        session.add(UploadLease(id=lease, tenant_id=tenant_id, started_at=now()))
        session.commit()
    return lease


def give_upload_slot(db: Database, lease: str) -> None:
    with db.session() as session:
        session.execute(delete(UploadLease).where(UploadLease.id == lease))
        session.commit()


def stored_bytes(session: Session, tenant_id: str) -> int:
    """Bytes of the tenant's datasets. A blob shared with another tenant counts for each: counting it
    once would tell a tenant that someone else holds the same bytes."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(Dataset.bytes), 0)).where(Dataset.tenant_id == tenant_id)
        )
        or 0
    )


def check_storage(session: Session, settings: Settings, tenant_id: str, adding: int) -> None:
    """413 `storage_quota_exceeded` unless `adding` more bytes fit the tenant's storage quota."""
    used = stored_bytes(session, tenant_id)
    if used + adding > settings.max_tenant_storage_bytes:
        raise PayloadTooLarge(
            f"this tenant stores {used} bytes of datasets; {adding} more would pass its quota of "
            f"{settings.max_tenant_storage_bytes} bytes; delete datasets to make room",
            param="file",
            code="storage_quota_exceeded",
        )
