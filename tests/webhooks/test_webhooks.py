"""Webhooks through the real app, a real worker and a real HTTP receiver on loopback."""

from __future__ import annotations

import json
import logging

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.webhooks import dispatch
from tests.conftest import DEMO, upload
from tests.webhooks.receiver import Receiver


@pytest.fixture(autouse=True)
def allow_private(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set before the settings fixture reads the environment: loopback receivers, retries at once."""
    monkeypatch.setenv("FTGUARD_WEBHOOK_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("FTGUARD_WEBHOOK_BACKOFF_BASE_S", "0")


def _dispatch(client, times: int = 1) -> int:
    state = client.app.state.ftguard
    return sum(dispatch.dispatch_due(db=state.services.db, settings=state.settings) for _ in range(times))


def _endpoint(client, url: str, events: list[str]) -> dict:
    r = client.post("/v1/webhook_endpoints", json={"url": url, "events": events})
    assert r.status_code == 201, r.text
    return r.json()


def _queued_screening(client, **extra) -> str:
    cust = upload(client, DEMO / "customer_benign_lists.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    r = client.post(
        "/v1/screenings",
        json={
            "dataset_id": cust,
            "alignment_dataset_id": align,
            "subset_size": 10,
            "anchors": False,
            **extra,
        },
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_signed_delivery_verifies_with_standardwebhooks(client, run_worker) -> None:
    with Receiver() as rx:
        ep = _endpoint(client, rx.url, ["screening.succeeded", "decision.made"])
        assert ep["secret"].startswith("whsec_") and ep["id"].startswith("we_")
        assert "secret" not in client.get(f"/v1/webhook_endpoints/{ep['id']}").json()  # shown once
        client.post(
            "/v1/policies",
            json={
                "name": "strict",
                "rules": [{"metric": "risk_score", "threshold": 0, "decision": "reject"}],
            },
        )
        scr = _queued_screening(client, policy="strict")
        run_worker()
        assert _dispatch(client) == 2
    assert len(rx.got) == 2
    wh = Webhook(ep["secret"])
    payloads = [wh.verify(m.body, m.headers) for m in rx.got]
    assert {p["type"] for p in payloads} == {"screening.succeeded", "decision.made"}
    made = next(p for p in payloads if p["type"] == "decision.made")
    assert made["data"]["id"] == scr and made["data"]["decision"] == "reject"
    assert made["data"]["decision_rule"]["rule"]["metric"] == "risk_score"
    with pytest.raises(WebhookVerificationError):  # another secret does not verify
        Webhook("whsec_" + "A" * 43 + "=").verify(rx.got[0].body, rx.got[0].headers)
    log = client.get(f"/v1/webhook_endpoints/{ep['id']}/deliveries").json()["data"]
    assert {d["status"] for d in log} == {"delivered"} and {d["id"] for d in log} == {
        m.headers["webhook-id"] for m in rx.got
    }


def test_retries_after_three_500s_under_one_webhook_id(client, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with Receiver(statuses=[500, 500, 500]) as rx:
        ep = _endpoint(client, rx.url, ["screening.cancelled"])
        scr = _queued_screening(client)
        assert client.post(f"/v1/screenings/{scr}/cancel").status_code == 200
        assert _dispatch(client, times=6) == 4  # three failures, then the success; nothing after
    assert [m.headers["webhook-id"] for m in rx.got] == [rx.got[0].headers["webhook-id"]] * 4
    body = Webhook(ep["secret"]).verify(rx.got[-1].body, rx.got[-1].headers)
    assert body["type"] == "screening.cancelled" and body["data"]["status"] == "cancelled"
    [d] = client.get(f"/v1/webhook_endpoints/{ep['id']}/deliveries").json()["data"]
    assert d["status"] == "delivered" and d["attempts"] == 4
    assert [a["status_code"] for a in d["log"]] == [500, 500, 500, 200]
    assert ep["secret"] not in caplog.text and ep["secret"].removeprefix("whsec_") not in caplog.text

    # replay: sent again under the same id
    r = client.post(f"/v1/webhook_endpoints/{ep['id']}/deliveries/{d['id']}/replay")
    assert r.status_code == 200 and r.json()["status"] == "pending"
    with Receiver() as rx2:
        client.patch(f"/v1/webhook_endpoints/{ep['id']}", json={"url": rx2.url})
        assert _dispatch(client) == 1
    assert rx2.got[0].headers["webhook-id"] == d["id"]
    assert client.post(f"/v1/webhook_endpoints/{ep['id']}/deliveries/msg_nope/replay").status_code == 404


def test_backoff_grows_with_jitter(settings) -> None:
    import random

    settings.webhook_backoff_base_s, settings.webhook_backoff_max_s = 2.0, 30.0
    rng = random.Random(0)
    delays = [[dispatch.backoff_s(a, settings, rng) for _ in range(200)] for a in (1, 2, 3, 10)]
    assert [max(d) <= cap for d, cap in zip(delays, (2, 4, 8, 30), strict=True)] == [True] * 4
    assert max(delays[3]) > 20 and min(delays[3]) < 10  # spread: jitter, not a fixed step


def test_rotated_secret_signs_alongside_the_old_one(client) -> None:
    with Receiver() as rx:
        ep = _endpoint(client, rx.url, ["screening.cancelled"])
        new = client.post(f"/v1/webhook_endpoints/{ep['id']}/rotate_secret").json()
        assert new["secret"] != ep["secret"] and new["secret"].startswith("whsec_")
        scr = _queued_screening(client)
        client.post(f"/v1/screenings/{scr}/cancel")
        _dispatch(client)
    [m] = rx.got
    assert len(m.headers["webhook-signature"].split(" ")) == 2
    for secret in (ep["secret"], new["secret"]):
        assert Webhook(secret).verify(m.body, m.headers)["type"] == "screening.cancelled"


def test_ssrf_private_addresses_and_redirects_are_refused(client) -> None:
    settings = client.app.state.ftguard.settings
    with Receiver(statuses=[302], location="http://169.254.169.254/latest/meta-data") as rx:
        ep = _endpoint(client, rx.url, ["screening.cancelled"])  # allowed while the flag is on
        settings.webhook_allow_private = False
        for url in (
            "http://127.0.0.1:9/x",
            "http://localhost/x",
            "http://10.1.2.3/x",
            "http://169.254.169.254/latest",
            "http://[::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "ftp://example.com/x",
            "http://user:pw@example.com/x",
        ):
            r = client.post("/v1/webhook_endpoints", json={"url": url, "events": ["decision.made"]})
            assert r.status_code == 400, (url, r.text)
        r = client.post(
            "/v1/webhook_endpoints", json={"url": "http://127.0.0.1/x", "events": ["decision.made"]}
        )
        assert r.json()["error"]["code"] == "webhook_url_refused"
        scr = _queued_screening(client)
        client.post(f"/v1/screenings/{scr}/cancel")
        _dispatch(client)
        assert rx.got == []  # refused at delivery time too: the receiver on loopback was never called
        [d] = client.get(f"/v1/webhook_endpoints/{ep['id']}/deliveries").json()["data"]
        assert d["status"] == "pending" and d["log"][0]["refused"] is True

        settings.webhook_allow_private = True
        _dispatch(client)
    [m] = rx.got  # a 302 is a failed attempt: its Location is never requested
    assert m.path == "/hook"
    [d] = client.get(f"/v1/webhook_endpoints/{ep['id']}/deliveries").json()["data"]
    assert d["status"] == "pending" and d["log"][-1] == d["log"][-1] | {
        "status_code": 302,
        "ok": False,
        "error": "redirect not followed",
    }


def test_endpoint_crud_and_tenancy(client, other_client) -> None:
    ep = _endpoint(client, "http://127.0.0.1:9/x", ["experiment.failed", "screening.failed"])
    assert ep["events"] == ["screening.failed", "experiment.failed"]
    assert [e["id"] for e in client.get("/v1/webhook_endpoints").json()["data"]] == [ep["id"]]
    assert other_client.get(f"/v1/webhook_endpoints/{ep['id']}").status_code == 404
    assert other_client.get("/v1/webhook_endpoints").json()["data"] == []
    bad = client.post(
        "/v1/webhook_endpoints", json={"url": "http://127.0.0.1/x", "events": ["screening.done"]}
    )
    assert bad.status_code == 422
    assert client.delete(f"/v1/webhook_endpoints/{ep['id']}").status_code == 204
    assert client.get(f"/v1/webhook_endpoints/{ep['id']}").status_code == 404
    assert json.loads(json.dumps(client.get("/v1/webhook_endpoints").json()))["data"] == []


def test_experiment_cancelled_is_delivered(client, tiny_llama) -> None:
    from tests.api.test_experiments import _body

    cust = upload(client, DEMO / "customer_benign_lists.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    with Receiver() as rx:
        ep = _endpoint(client, rx.url, ["experiment.cancelled", "screening.cancelled"])
        client.app.state.ftguard.settings.models["tiny-llama"] = tiny_llama  # requests name models
        r = client.post("/v1/experiments", json=_body(cust, align, "tiny-llama"))
        assert r.status_code == 201, r.text
        assert client.post(f"/v1/experiments/{r.json()['id']}/cancel").status_code == 200
        assert _dispatch(client) == 1
    [m] = rx.got
    event = Webhook(ep["secret"]).verify(m.body, m.headers)
    assert event["type"] == "experiment.cancelled"
    assert (
        event["data"] | {"status": "cancelled", "id": r.json()["id"], "object": "experiment"} == event["data"]
    )
