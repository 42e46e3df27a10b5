"""Webhooks survive crashes: the API SIGKILLed right after the commit that wrote the outbox row, and a
dispatcher SIGKILLed in the middle of an attempt. The delivery still arrives, every time under one id."""

from __future__ import annotations

import signal

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from app.core.db import Database
from app.core.services import Ctx
from app.models import WebhookDelivery
from app.webhooks import service as webhooks
from tests.chaos.conftest import wait_for
from tests.chaos.test_api_crash import _port, _serve
from tests.conftest import DEMO, bearer, key_for
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.chaos
ENV = {
    "FTGUARD_WEBHOOK_ALLOW_PRIVATE": "true",
    "FTGUARD_WEBHOOK_TIMEOUT_S": "5",
    "FTGUARD_WEBHOOK_POLL_S": "0.2",
}


def test_delivery_survives_api_and_dispatcher_sigkill(chaos_settings, spawn) -> None:
    auth = bearer(key_for(chaos_settings, "test"))
    db = Database(chaos_settings.sqlalchemy_url)
    with Receiver(hold_first=True) as rx:
        api, base = _serve(spawn, _port())
        with db.session() as s:  # on the database: the API process does not allow loopback receivers
            loopback = chaos_settings.model_copy(update={"webhook_allow_private": True})
            ctx = Ctx(session=s, queue=None, settings=loopback, tenant_id="test")  # type: ignore[arg-type]
            secret = webhooks.create(ctx, url=rx.url, events=["screening.cancelled"], description="").secret
        with httpx.Client(base_url=base, headers=auth, timeout=60) as c:
            cust = c.post(
                "/v1/datasets",
                files={"file": ("c.jsonl", (DEMO / "customer_benign_lists.jsonl").read_bytes())},
                data={"purpose": "fine-tune"},
            ).json()["id"]
            align = c.post(
                "/v1/datasets",
                files={"file": ("a.jsonl", (DEMO / "alignment.jsonl").read_bytes())},
                data={"purpose": "alignment"},
            ).json()["id"]
            scr = c.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}).json()[
                "id"
            ]
            assert c.post(f"/v1/screenings/{scr}/cancel").status_code == 200
        api.send_signal(signal.SIGKILL)  # committed, never delivered: the API does not dispatch
        api.wait(timeout=30)
        with db.session() as s:
            [d] = s.scalars(select(WebhookDelivery)).all()
            assert d.status == "pending" and d.attempts == 0

        first = spawn("app.cli", "webhooks", "dispatch", "--loop", log="dispatch-a", **ENV)
        wait_for("the first attempt to reach the receiver", rx.holding.is_set, timeout=120)
        first.send_signal(signal.SIGKILL)  # mid-attempt: the receiver still holds the request
        first.wait(timeout=30)
        rx.release.set()
        spawn("app.cli", "webhooks", "dispatch", "--loop", log="dispatch-b", **ENV)

        def delivered() -> bool:
            with db.session() as s:
                return s.get(WebhookDelivery, d.id).status == "delivered"  # type: ignore[union-attr]

        wait_for("the delivery after the lease", delivered, timeout=180)
    ids = {m.headers["webhook-id"] for m in rx.got}
    assert len(rx.got) >= 2 and ids == {d.id}
    for m in rx.got:
        assert Webhook(secret).verify(m.body, m.headers)["data"]["id"] == scr
    db.dispose()
