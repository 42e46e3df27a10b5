"""The dispatcher: claims due outbox rows, signs them (Standard Webhooks, `standardwebhooks`), POSTs them
without following redirects, and retries failures with exponential backoff and full jitter.

A row is claimed by one conditional UPDATE that pushes its `next_attempt_at` past the attempt's timeout,
so several dispatchers (every worker runs one) never send one attempt twice, and a dispatcher that dies
mid-attempt leaves the row due again once the lease passes: at least once, always under the row's id as
`webhook-id`. The secret is never logged nor stored in the delivery log.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook

from app.core.config import Settings
from app.core.db import Database
from app.core.errors import InvalidRequest
from app.models import WebhookDelivery, WebhookEndpoint, now
from app.webhooks.guard import check_url

log = logging.getLogger("ftguard.webhooks")
LOG_KEPT = 20  # attempts kept per delivery
BATCH = 50


def backoff_s(attempt: int, settings: Settings, rng: random.Random | None = None) -> float:
    """Delay before attempt `attempt + 1`: full jitter over min(max, base * 2^(attempt - 1))."""
    cap = min(settings.webhook_backoff_max_s, settings.webhook_backoff_base_s * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(0.0, cap)


def headers(ep: WebhookEndpoint, msg_id: str, payload: str, ts: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers; during a rotation's grace both secrets sign."""
    secrets = [ep.secret]
    if ep.previous_secret and (ep.previous_expires_at or 0) > now():
        secrets.append(ep.previous_secret)
    signature = " ".join(Webhook(s).sign(msg_id, ts, payload) for s in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(ts.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": "ftguard-webhooks",
    }


def _claim(db: Database, delivery_id: str, lease_s: float) -> bool:
    t = time.time()
    with db.session() as session:
        res = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= t,
            )
            .values(next_attempt_at=t + lease_s, attempts=WebhookDelivery.attempts + 1),
            execution_options={"synchronize_session": False},
        )
        session.commit()
        return getattr(res, "rowcount", 0) == 1


def attempt(
    ep: WebhookEndpoint, d: WebhookDelivery, settings: Settings, client: httpx.Client
) -> dict[str, Any]:
    """One POST; the outcome as a log entry (`ok` for a 2xx; a redirect is a failure, never followed)."""
    entry: dict[str, Any] = {"at": now(), "attempt": d.attempts}
    try:
        check_url(ep.url, allow_private=settings.webhook_allow_private)
        t0 = time.perf_counter()
        r = client.post(
            ep.url, content=d.payload.encode(), headers=headers(ep, d.id, d.payload, datetime.now(tz=UTC))
        )
        entry |= {"status_code": r.status_code, "duration_ms": round(1000 * (time.perf_counter() - t0), 1)}
        entry["ok"] = 200 <= r.status_code < 300
        if 300 <= r.status_code < 400:
            entry["error"] = "redirect not followed"
    except InvalidRequest as exc:
        entry |= {"ok": False, "error": exc.message, "refused": True}
    except httpx.HTTPError as exc:
        entry |= {"ok": False, "error": type(exc).__name__}
    return entry


def dispatch_due(*, db: Database, settings: Settings, client: httpx.Client | None = None) -> int:
    """Send every due delivery once; returns how many attempts were made."""
    own = client is None
    client = client or httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False)
    made = 0
    try:
        with db.session() as session:
            due = list(
                session.scalars(
                    select(WebhookDelivery.id)
                    .where(
                        WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= time.time()
                    )
                    .order_by(WebhookDelivery.next_attempt_at)
                    .limit(BATCH)
                )
            )
        for delivery_id in due:
            if not _claim(db, delivery_id, lease_s=3 * settings.webhook_timeout_s + 5):
                continue
            with db.session() as session:
                d = session.get(WebhookDelivery, delivery_id)
                ep = session.get(WebhookEndpoint, d.endpoint_id) if d else None
                if d is None or ep is None:
                    continue
                if ep.deleted_at is not None:
                    d.status = "failed"
                    session.commit()
                    continue
                entry = attempt(ep, d, settings, client)
                made += 1
                d.log = [*d.log, entry][-LOG_KEPT:]
                if entry["ok"]:
                    d.status, d.delivered_at = "delivered", now()
                elif d.attempts >= settings.webhook_max_attempts:
                    d.status = "failed"
                else:
                    d.next_attempt_at = time.time() + backoff_s(d.attempts, settings)
                session.commit()
                log.info(
                    "webhook attempt",
                    extra={
                        "delivery_id": d.id,
                        "endpoint_id": ep.id,
                        "event_type": d.event_type,
                        "ok": entry["ok"],
                        "status_code": entry.get("status_code"),
                        "attempt": d.attempts,
                    },
                )
    finally:
        if own:
            client.close()
    return made


def run_forever(*, db: Database, settings: Settings, stop: Any) -> None:
    """The dispatcher loop of a worker (or `ftguard webhooks dispatch`): until `stop` is set."""
    while True:
        try:
            dispatch_due(db=db, settings=settings)
        except Exception:  # a database outage: the rows wait in SQL
            log.warning("webhook dispatch failed", exc_info=True)
        if stop.wait(settings.webhook_poll_s):
            return
