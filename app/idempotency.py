"""Idempotency keys: a POST retried with the same `Idempotency-Key` gets the first result, and nothing new
is created.

Semantics follow the IETF httpapi idempotency-key draft (and Stripe): the key is scoped to the tenant; the
first request claims it (a row `in_progress`, made unique by the database, so two concurrent requests
cannot both run); when it ends with a 2xx its status and body are stored and later requests with the same
key and the same content are answered from the row; a request with the same key but different content is
a 422, and one that arrives while the first still runs is a 409. A first request that ends in an error
stores nothing, so a retry runs again (nothing was created). Rows live `idempotency_ttl_s`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from app.core.db import Database
from app.core.errors import Conflict, IdempotencyKeyReused, InvalidRequest
from app.models import IdempotencyRecord, now

log = logging.getLogger("ftguard.api")
HEADER = "Idempotency-Key"
KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
# A claim whose request died with its process (no response was ever stored) is given up after this.
IN_PROGRESS_STALE_S = 600
MAX_STORED_BODY = 1 << 20


@dataclass(frozen=True)
class Claim:
    record_id: int


@dataclass(frozen=True)
class Replay:
    status: int
    body: Any


def check_key(key: str) -> None:
    if not KEY.match(key):
        raise InvalidRequest(
            f"{HEADER} must be 1-255 printable ASCII characters without spaces",
            param=HEADER,
            code="invalid_idempotency_key",
        )


def claim(*, db: Database, tenant_id: str, key: str, fingerprint: str, ttl_s: int) -> Claim | Replay:
    """Claim the key for this request, or the stored first result to replay."""
    check_key(key)
    for _ in range(3):
        with db.session() as session:
            row = session.scalar(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.tenant_id == tenant_id, IdempotencyRecord.key == key
                )
            )
            t = now()
            if row is not None and (
                row.created_at < t - ttl_s
                or (row.state == "in_progress" and row.created_at < t - IN_PROGRESS_STALE_S)
            ):
                session.delete(row)
                session.commit()
                row = None
            if row is not None:
                if row.fingerprint != fingerprint:
                    raise IdempotencyKeyReused(
                        f"this {HEADER} was used for a different request; use a new key for a new request",
                        param=HEADER,
                    )
                if row.state != "done" or row.response_status is None or row.response_body is None:
                    raise Conflict(
                        f"a request with this {HEADER} is still being processed; retry in a moment",
                        param=HEADER,
                        code="idempotency_key_in_use",
                    )
                return Replay(status=row.response_status, body=json.loads(row.response_body))
            rec = IdempotencyRecord(
                tenant_id=tenant_id, key=key, fingerprint=fingerprint, state="in_progress"
            )
            session.add(rec)
            try:
                session.commit()
            except IntegrityError:  # a concurrent request claimed it first: read its row
                session.rollback()
                continue
            return Claim(record_id=rec.id)
    raise Conflict(
        f"a request with this {HEADER} is still being processed; retry in a moment",
        param=HEADER,
        code="idempotency_key_in_use",
    )


def complete(*, db: Database, claim: Claim, status: int, body: bytes) -> None:
    """Store the first result (a 2xx JSON body) for replay."""
    with db.session() as session:
        session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.id == claim.record_id)
            .values(state="done", response_status=status, response_body=body.decode())
        )
        session.commit()


def release(*, db: Database, claim: Claim) -> None:
    """Forget the claim: the request failed and created nothing, so a retry must run again."""
    with db.session() as session:
        session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == claim.record_id))
        session.commit()


def purge(*, db: Database, ttl_s: int) -> int:
    """Delete records past their time to live; returns how many."""
    with db.session() as session:
        res = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now() - ttl_s))
        session.commit()
        return int(getattr(res, "rowcount", 0) or 0)
