"""Every POST route in the OpenAPI schema takes Idempotency-Key: a retry with the same key gets the first
result and creates nothing new, and an empty or malformed key is a 400 (never read as "no key").

The routes come from `app.openapi()`, so a new POST route fails `test_every_post_route_has_a_case` until it
gets a case below, and then the replay walk checks it like the others."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select

from app.models import (
    ApiKey,
    Base,
    Calibration,
    Comparison,
    Dataset,
    Event,
    Experiment,
    Policy,
    Ranking,
    Report,
    Screening,
    Tenant,
    WebhookDelivery,
    WebhookEndpoint,
)
from tests.api.test_errors import assert_envelope
from tests.api.test_experiments import _body
from tests.conftest import DEMO, upload

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_llama(tiny_llama: str, settings: Any) -> str:
    """The tiny model under a registry name (requests name models, never paths; see test_experiments)."""
    settings.models["tiny-llama"] = tiny_llama
    return "tiny-llama"


@dataclass
class Call:
    """One successful request of a route, and the table whose row count it changes (or must not)."""

    client: Any
    path: str
    counts: tuple[type[Base], ...]
    json: Any = None
    files: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    ignore: tuple[str, ...] = field(default=())  # fields not replayed (secrets shown once)

    def send(self, key: str | None) -> Any:
        headers = {} if key is None else {"Idempotency-Key": key}
        kw: dict[str, Any] = {"headers": headers}
        if self.files is not None:
            kw |= {"files": self.files, "data": self.data}
        elif self.json is not None:
            kw["json"] = self.json
        return self.client.post(self.path, **kw)


@dataclass
class World:
    client: Any
    admin: Any
    tiny: str
    _cache: dict[str, str] = field(default_factory=dict)

    def cust(self) -> str:
        if "cust" not in self._cache:
            self._cache["cust"] = upload(self.client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
        return self._cache["cust"]

    def align(self) -> str:
        if "align" not in self._cache:
            self._cache["align"] = upload(self.client, DEMO / "alignment.jsonl", purpose="alignment").json()[
                "id"
            ]
        return self._cache["align"]

    def screening(self) -> str:
        r = self.client.post(
            "/v1/screenings", json={"dataset_id": self.cust(), "alignment_dataset_id": self.align()}
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def experiment(self) -> str:
        r = self.client.post("/v1/experiments", json=_body(self.cust(), self.align(), self.tiny))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def comparison_body(self) -> dict[str, Any]:
        body = _body(self.cust(), self.align(), self.tiny)
        body["alignment"] = {k: v for k, v in body["alignment"].items() if k != "selection"}
        return body | {"variants": ["high_sim", "low_sim"]}


def _cancelled_experiment(w: World) -> str:
    exp = w.experiment()
    assert w.client.post(f"/v1/experiments/{exp}/cancel").status_code == 200
    return exp


def _judged_screening(w: World) -> str:
    """A screening given a small stored report and scores file, so it can be judged again (no worker: the
    walk is about the key, not the decision)."""
    import numpy as np

    from app.core.storage import scores_key
    from app.screenings import scores

    scr_id = w.screening()
    services = w.client.app.state.ftguard.services
    key = scores_key("test", scr_id)
    scores.save(services.store, key, {"c_max": np.array([0.1, 0.9], dtype=np.float32)})
    body = {
        "risk": {
            "risk_score": 40.0,
            "parts": [],
            "reference_levels": {"floor": 0.2, "near": 0.5, "high": 0.6},
        }
    }
    with services.db.session() as s:
        s.add(Report(screening_id=scr_id, tenant_id="test", body=body, scores_key=key))
        s.commit()
    return scr_id


def _hook_url(w: World) -> str:
    """A receiver URL the walk may register (nothing is sent: no dispatcher runs here)."""
    w.client.app.state.ftguard.settings.webhook_allow_private = True
    return "http://127.0.0.1:9/hook"


def _delivery(w: World) -> tuple[str, str]:
    """An endpoint with one delivery in its log (a cancelled screening's)."""
    ep = w.client.post(
        "/v1/webhook_endpoints", json={"url": _hook_url(w), "events": ["screening.cancelled"]}
    ).json()["id"]
    w.client.post(f"/v1/screenings/{w.screening()}/cancel")
    return ep, w.client.get(f"/v1/webhook_endpoints/{ep}/deliveries").json()["data"][0]["id"]


CASES: dict[str, Callable[[World], Call]] = {
    "/v1/policies": lambda w: Call(
        w.client,
        "/v1/policies",
        (Policy,),
        json={
            "name": f"walk-{uuid.uuid4().hex[:8]}",
            "rules": [{"metric": "risk_score", "threshold": 50, "decision": "review"}],
        },
    ),
    "/v1/screenings/{screening_id}/decision": lambda w: Call(
        w.client, f"/v1/screenings/{_judged_screening(w)}/decision", (Event,), json={}
    ),
    "/v1/screenings/{screening_id}/rescreen": lambda w: Call(
        w.client,
        f"/v1/screenings/{_judged_screening(w)}/rescreen",
        (Screening, Dataset, Event),
        json={"variant": "filtered"},
    ),
    "/v1/webhook_endpoints": lambda w: Call(
        w.client,
        "/v1/webhook_endpoints",
        (WebhookEndpoint,),
        json={"url": _hook_url(w), "events": ["decision.made"]},
        ignore=("secret",),
    ),
    "/v1/webhook_endpoints/{endpoint_id}/rotate_secret": lambda w: Call(
        w.client,
        "/v1/webhook_endpoints/"
        + w.client.post(
            "/v1/webhook_endpoints", json={"url": _hook_url(w), "events": ["decision.made"]}
        ).json()["id"]
        + "/rotate_secret",
        (WebhookEndpoint,),
        ignore=("secret",),
    ),
    "/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/replay": lambda w: Call(
        w.client, "/v1/webhook_endpoints/{}/deliveries/{}/replay".format(*_delivery(w)), (WebhookDelivery,)
    ),
    "/v1/datasets": lambda w: Call(
        w.client,
        "/v1/datasets",
        (Dataset,),
        files={"file": ("walk.jsonl", (DEMO / "customer_benign_lists.jsonl").read_bytes())},
        data={"purpose": "fine-tune"},
    ),
    "/v1/datasets/validate": lambda w: Call(
        w.client,
        "/v1/datasets/validate",
        (Dataset,),  # it stores nothing, retried or not
        files={"file": ("walk.jsonl", (DEMO / "customer_benign_lists.jsonl").read_bytes())},
        data={"purpose": "fine-tune"},
    ),
    "/v1/screenings": lambda w: Call(
        w.client,
        "/v1/screenings",
        (Screening, Event),
        json={"dataset_id": w.cust(), "alignment_dataset_id": w.align()},
    ),
    "/v1/screenings/{screening_id}/cancel": lambda w: Call(
        w.client, f"/v1/screenings/{w.screening()}/cancel", (Event,)
    ),
    "/v1/rankings": lambda w: Call(
        w.client,
        "/v1/rankings",
        (Ranking, Screening),
        json={
            "dataset_id": w.cust(),
            "candidates": [
                {"name": "a", "alignment_dataset_id": w.align()},
                {"name": "b", "alignment_dataset_id": w.align()},
            ],
        },
    ),
    "/v1/admin/tenants": lambda w: Call(
        w.admin, "/v1/admin/tenants", (Tenant,), json={"id": f"walk-{uuid.uuid4().hex[:8]}"}
    ),
    "/v1/admin/keys": lambda w: Call(
        w.admin, "/v1/admin/keys", (ApiKey,), json={"tenant_id": "test", "name": "walk"}, ignore=("key",)
    ),
    "/v1/admin/keys/{key_id}/revoke": lambda w: Call(
        w.admin,
        f"/v1/admin/keys/{w.admin.post('/v1/admin/keys', json={'tenant_id': 'test'}).json()['id']}/revoke",
        (ApiKey,),
    ),
    "/v1/experiments": lambda w: Call(
        w.client, "/v1/experiments", (Experiment, Event), json=_body(w.cust(), w.align(), w.tiny)
    ),
    "/v1/experiments/{experiment_id}/cancel": lambda w: Call(
        w.client, f"/v1/experiments/{w.experiment()}/cancel", (Event,)
    ),
    "/v1/experiments/{experiment_id}/resume": lambda w: Call(
        w.client, f"/v1/experiments/{_cancelled_experiment(w)}/resume", (Event,)
    ),
    "/v1/comparisons": lambda w: Call(
        w.client, "/v1/comparisons", (Comparison, Experiment, Event), json=w.comparison_body()
    ),
    "/v1/comparisons/{comparison_id}/cancel": lambda w: Call(
        w.client,
        f"/v1/comparisons/{w.client.post('/v1/comparisons', json=w.comparison_body()).json()['id']}/cancel",
        (Event,),
    ),
    "/v1/calibration/refit": lambda w: Call(w.client, "/v1/calibration/refit", (Calibration,), json={}),
}


def _post_routes(app: Any) -> dict[str, dict[str, Any]]:
    return {path: ops["post"] for path, ops in app.openapi()["paths"].items() if "post" in ops}


def _count(client: Any, model: type[Base]) -> int:
    with client.app.state.ftguard.services.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_every_post_route_has_a_case_and_documents_the_header(client) -> None:
    routes = _post_routes(client.app)
    assert set(routes) == set(CASES), "a POST route without an idempotency case (add one to CASES)"
    for path, op in routes.items():
        names = {p["name"] for p in op.get("parameters", []) if p.get("in") == "header"}
        assert "Idempotency-Key" in names, path
        assert "400" in op["responses"], f"{path}: the 400 of a bad key is not documented"


def test_every_post_route_replays_its_first_result(client, admin_client, tiny_llama) -> None:
    w = World(client, admin_client, tiny_llama)
    seen = []
    for path in _post_routes(client.app):
        call = CASES[path](w)
        key = str(uuid.uuid4())
        first = call.send(key)
        assert 200 <= first.status_code < 300, (path, first.text)
        assert "idempotent-replayed" not in first.headers
        before = {m: _count(client, m) for m in call.counts}
        again = call.send(key)
        assert again.status_code == first.status_code, (path, again.text)
        assert again.headers.get("idempotent-replayed") == "true", path
        drop = set(call.ignore)
        assert {k: v for k, v in again.json().items() if k not in drop} == {
            k: v for k, v in first.json().items() if k not in drop
        }, path
        assert {m: _count(client, m) for m in call.counts} == before, f"{path}: the retry created rows"
        seen.append(path)
    assert len(seen) == len(CASES)


@pytest.mark.parametrize("bad", ["", " ", "a" * 256, "spaces are not allowed", "\u00e9t\u00e9"])
def test_every_post_route_refuses_an_empty_or_malformed_key(client, admin_client, bad) -> None:
    for path, op in _post_routes(client.app).items():
        who = admin_client if path.startswith("/v1/admin") else client
        concrete = path.replace("{", "").replace("}", "")  # ids need not exist: the key is checked first
        try:
            r = who.post(concrete, headers={"Idempotency-Key": bad.encode("utf-8")}, json={})
        except Exception as exc:  # pragma: no cover - a client-side refusal would hide the server's answer
            raise AssertionError(f"{path}: {exc}") from exc
        assert r.status_code == 400, (path, bad, r.status_code, r.text)
        assert_envelope(r.json(), "invalid_idempotency_key")
        assert r.json()["error"]["param"] == "Idempotency-Key"
        assert op  # every route of the schema was tried
