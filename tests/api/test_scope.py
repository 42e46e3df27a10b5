"""The `alignment:read` scope on every route, generated from the routes themselves: a key without it, in the
tenant that holds the provider's alignment and anchor sets, a finished screening and a finished experiment,
walks every route in the OpenAPI schema and every dashboard page, and no answer may carry an alignment or
anchor text, the sets' file names or hashes, or an artefact built on them. A new route is walked too (and a
new write, or a new path parameter, fails here until it is given a body or a value)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.core.storage import staged_file
from tests.conftest import DEMO, bearer, make_key, make_settings, upload

ALIGN_NAME = "provider-private-alignment-v7.jsonl"
HARMFUL_NAME = "provider-private-harmful-anchors-v3.jsonl"


# DELETE routes are walked on ids that do not exist (the walk's own objects are needed afterwards)
UNKNOWN_IDS = {
    "/v1/datasets/{dataset_id}": "/v1/datasets/ds_0000000000000000abcdef0123",
    "/v1/experiments/{experiment_id}": "/v1/experiments/exp_0000000000000000abcdef0123",
    "/v1/policies/{name}": "/v1/policies/no-such-policy",
    "/v1/webhook_endpoints/{endpoint_id}": "/v1/webhook_endpoints/we_0000000000000000abcdef0123",
}


def _texts(path: Any) -> list[str]:
    """The long string fields of a JSONL file (the parts that identify its records)."""
    out = []
    for line in path.read_text().splitlines():
        for v in json.loads(line).values():
            if isinstance(v, str) and len(v) > 40:
                out.append(v[:40])
    return out


def _fake_finished_experiment(client: TestClient, align: str, cust: str) -> str:
    """An experiment whose stages all finished, with artefacts that hold alignment texts (an adapter that
    memorised them, generations that repeat them): written straight to SQL and the blob store, as a worker
    would, without training anything."""
    from app.experiments.service import STAGES
    from app.models import Experiment, ExperimentStage

    r = client.post(
        "/v1/experiments", json={"alignment": {"dataset_id": align}, "fine_tune": {"dataset_id": cust}}
    )
    assert r.status_code == 201, r.text
    exp_id = r.json()["id"]
    services = client.app.state.ftguard.services
    secret = (DEMO / "alignment.jsonl").read_text().splitlines()[0]
    with services.db.session() as session:
        for st in session.query(ExperimentStage).filter(ExperimentStage.experiment_id == exp_id):
            key = f"experiments/test/{exp_id}/{st.name}-1-artefact"
            with staged_file(services.store) as (path, fh):
                if st.name in ("align", "finetune"):
                    with tarfile.open(fileobj=fh, mode="w") as tar:
                        data = secret.encode()
                        info = tarfile.TarInfo("adapter_model.safetensors")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
                else:
                    fh.write((json.dumps({"prompt": "p", "response": secret}) + "\n").encode())
                fh.close()
                services.store.put_file(key, path)
            st.status, st.artefact_key, st.result = "succeeded", key, {"method": "lora"}
        exp = session.get(Experiment, exp_id)
        assert exp is not None
        exp.status, exp.stage = "succeeded", "done"
        session.commit()
    assert len(STAGES) == 6
    return str(exp_id)


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, database_url: str | None, redis_url: str, shared_models: Any
) -> Iterator[SimpleNamespace]:
    from app.main import create_app
    from workers.runner import run_worker
    from workers.runtime import Runtime, set_runtime

    settings = make_settings(tmp_path_factory.mktemp("scope") / "data", database_url, redis_url)
    with TestClient(create_app(settings, redis_url=redis_url)) as client:
        db = client.app.state.ftguard.services.db
        client.headers.update(bearer(make_key(db, "test")))  # every scope: the provider's own key
        blind = TestClient(client.app, headers=bearer(make_key(db, "test", scopes=[])))
        cust = upload(client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
        r = upload(client, DEMO / "alignment.jsonl", purpose="alignment", name=ALIGN_NAME)
        align, align_sha = r.json()["id"], r.json()["sha256"]
        r = upload(client, DEMO / "anchors_harmful.jsonl", purpose="harmful-anchors", name=HARMFUL_NAME)
        harmful, harmful_sha = r.json()["id"], r.json()["sha256"]
        done = client.post(
            "/v1/screenings",
            json={
                "dataset_id": cust,
                "alignment_dataset_id": align,
                "harmful_anchors_dataset_id": harmful,
                "subset_size": 5,
            },
        ).json()["id"]
        run_worker(
            settings,
            redis_url=redis_url,
            queues=["default"],
            burst=True,
            preload=False,
            runtime=Runtime(settings, models=shared_models),
        )
        set_runtime(None)
        assert client.get(f"/v1/screenings/{done}").json()["status"] == "succeeded"
        ranking = client.post(
            "/v1/rankings",
            json={
                "dataset_id": cust,
                "candidates": [{"name": n, "alignment_dataset_id": align} for n in "ab"],
            },
        ).json()["id"]
        exp = _fake_finished_experiment(client, align, cust)
        cmp = client.post(
            "/v1/comparisons", json={"alignment": {"dataset_id": align}, "fine_tune": {"dataset_id": cust}}
        ).json()["id"]
        secrets = [
            *_texts(DEMO / "alignment.jsonl"),
            *_texts(DEMO / "anchors_harmful.jsonl"),
            ALIGN_NAME,
            HARMFUL_NAME,
            align_sha,
            harmful_sha,
        ]
        assert hashlib.sha256((DEMO / "alignment.jsonl").read_bytes()).hexdigest() == align_sha
        yield SimpleNamespace(
            client=client,
            blind=blind,
            ids={
                "cust": cust,
                "align": align,
                "harmful": harmful,
                "done": done,
                "ranking": ranking,
                "exp": exp,
                "cmp": cmp,
            },
            secrets=secrets,
        )
        blind.close()


def _leaks(w: SimpleNamespace, r: Any) -> list[str]:
    body = r.content.decode("utf-8", "replace")
    return [s for s in w.secrets if s in body]


def _values(w: SimpleNamespace) -> dict[str, list[str]]:
    i = w.ids
    return {
        "dataset_id": [i["cust"], i["align"], i["harmful"]],
        "screening_id": [i["done"]],
        "subset": ["high_sim", "low_sim", "random"],
        "ranking_id": [i["ranking"]],
        "experiment_id": [i["exp"]],
        "name": ["alignment_adapter", "finetune_adapter", "generations", "judgements"],
        "comparison_id": [i["cmp"]],
        "key_id": ["key_anything"],
        "endpoint_id": ["we_0000000000000000abcdef0123"],
        "delivery_id": ["wd_0000000000000000abcdef0123"],
    }


def _writes(w: SimpleNamespace) -> dict[tuple[str, str], dict[str, Any] | None]:
    """Every write route and what the scope-less key sends it: the provider's alignment or anchor set in
    every role a customer could try it in."""
    i = w.ids
    return {
        ("POST", "/v1/datasets"): None,  # an upload of its own (below)
        ("POST", "/v1/datasets/validate"): None,  # a file of its own (below)
        ("POST", "/v1/screenings/{screening_id}/decision"): {},
        ("POST", "/v1/screenings/{screening_id}/rescreen"): {"variant": "augmented"},  # refused (below)
        ("POST", "/v1/policies"): {"name": "blind", "rules": []},
        ("PUT", "/v1/policies/{name}"): {"rules": []},
        ("DELETE", "/v1/policies/{name}"): None,
        ("POST", "/v1/webhook_endpoints"): {"url": "https://93.184.216.34/h", "events": ["decision.made"]},
        ("PATCH", "/v1/webhook_endpoints/{endpoint_id}"): {"events": ["decision.made"]},
        ("DELETE", "/v1/webhook_endpoints/{endpoint_id}"): None,
        ("POST", "/v1/webhook_endpoints/{endpoint_id}/rotate_secret"): {},
        ("POST", "/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/replay"): {},
        ("DELETE", "/v1/datasets/{dataset_id}"): None,  # walked on an unknown id (below)
        ("DELETE", "/v1/experiments/{experiment_id}"): None,  # likewise
        ("POST", "/v1/screenings"): {"dataset_id": i["align"], "alignment_dataset_id": i["align"]},
        ("POST", "/v1/screenings/{screening_id}/cancel"): {},
        ("POST", "/v1/rankings"): {
            "dataset_id": i["harmful"],
            "candidates": [{"name": n, "alignment_dataset_id": i["align"]} for n in "ab"],
        },
        ("POST", "/v1/experiments"): {
            "alignment": {"dataset_id": i["align"]},
            "fine_tune": {"dataset_id": i["align"]},
        },
        ("POST", "/v1/experiments/{experiment_id}/cancel"): {},
        ("POST", "/v1/experiments/{experiment_id}/resume"): {},
        ("POST", "/v1/comparisons"): {
            "alignment": {"dataset_id": i["align"]},
            "fine_tune": {"dataset_id": i["harmful"]},
        },
        ("POST", "/v1/comparisons/{comparison_id}/cancel"): {},
        ("POST", "/v1/calibration/refit"): {},
        ("POST", "/v1/admin/tenants"): {"id": "stolen"},
        ("POST", "/v1/admin/keys"): {"tenant_id": "test", "role": "admin"},
        ("POST", "/v1/admin/keys/{key_id}/revoke"): {},
    }


# What must be refused outright to a key without the scope (the rest answer, redacted).
MUST_REFUSE = (
    re.compile(r"^/v1/datasets/(ds_\w+)/preview$"),
    re.compile(r"/subsets/"),
    re.compile(r"/datasets/augmented$"),
    re.compile(r"/artefacts/"),
)


def _paths(template: str, values: dict[str, list[str]]) -> list[str]:
    combos: list[dict[str, str]] = [{}]
    for n in re.findall(r"{(\w+)}", template):
        assert n in values, f"new path parameter {{{n}}} in {template}: give the scope walk a value for it"
        combos = [{**c, n: v} for c in combos for v in values[n]]
    return [template.format(**c) for c in combos]


def test_every_api_route_hides_alignment_content_from_a_key_without_the_scope(world) -> None:
    w, values, writes = world, _values(world), _writes(world)
    walked = []
    for template, ops in w.client.get("/openapi.json").json()["paths"].items():
        for method in (m.upper() for m in ops):
            walked.append((method, template))
            if method != "GET":
                assert (method, template) in writes, f"new write {method} {template}: add it to _writes"
            for path in _paths(template, values):
                if (method, template) == ("POST", "/v1/datasets"):
                    r = upload(w.blind, DEMO / "customer_benign_lists.jsonl")
                elif (method, template) == ("POST", "/v1/datasets/validate"):
                    body = (DEMO / "customer_benign_lists.jsonl").read_bytes()
                    r = w.blind.post(path, files={"file": ("v.jsonl", body)}, data={"purpose": "fine-tune"})
                elif method == "DELETE":
                    r = w.blind.delete(UNKNOWN_IDS[template])
                else:
                    r = w.blind.request(method, path, json=writes.get((method, template)))
                assert r.status_code < 500, (method, path, r.status_code, r.text[:300])
                assert not _leaks(w, r), (method, path, _leaks(w, r))
                if method == "GET" and any(p.search(path) for p in MUST_REFUSE):
                    private = not path.startswith("/v1/datasets/") or w.ids["cust"] not in path
                    if private:
                        assert r.status_code == 403, (path, r.status_code)
                        assert r.json()["error"]["code"] == "insufficient_scope"
                if template.endswith("/rescreen"):  # an augmented set holds alignment records
                    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
                if method == "POST" and template in ("/v1/screenings", "/v1/rankings", "/v1/experiments"):
                    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_purpose", r.text
    assert len(walked) >= 30, walked


def _dashboard_routes() -> list[APIRoute]:
    from app.dashboard import experiment_pages, routes, signin

    return [
        r
        for router in (routes.router, routes.root, experiment_pages.router, signin.router)
        for r in router.routes
        if isinstance(r, APIRoute) and "GET" in r.methods
    ]


def test_every_dashboard_page_hides_alignment_content_from_a_key_without_the_scope(world) -> None:
    w, values = world, _values(world)
    seen = 0
    for route in _dashboard_routes():
        for path in _paths(route.path, values):
            for query in ("", "?redact=1"):
                r = w.blind.get(path + query, follow_redirects=False)
                seen += 1
                assert r.status_code < 500, (path, r.status_code)
                assert not _leaks(w, r), (path + query, _leaks(w, r))
                if "/subsets/" in path or "/artefacts/" in path:
                    assert r.status_code == 403, (path, r.status_code)
    assert seen >= 20


def test_the_walk_can_fail_the_same_routes_show_it_all_with_the_scope(world) -> None:
    """The positive control: with the scope, the same routes carry the texts, names and artefacts the walk
    looks for (so a walk that finds nothing is not blind)."""
    w, i = world, world.ids
    report = w.client.get(f"/v1/screenings/{i['done']}/report")
    assert report.json()["redacted"] is False and _leaks(w, report)
    assert w.client.get(f"/v1/datasets/{i['align']}").json()["filename"] == ALIGN_NAME
    assert w.client.get(f"/v1/experiments/{i['exp']}/artefacts/alignment_adapter").status_code == 200
    assert _leaks(w, w.client.get(f"/v1/experiments/{i['exp']}/artefacts/generations"))
    page = w.client.get(f"/dashboard/screenings/{i['done']}")
    assert ALIGN_NAME in page.text
    # and the scope-less key sees the numbers, not the names
    ds = w.blind.get(f"/v1/datasets/{i['align']}").json()
    assert ds["filename"] is None and ds["sha256"] is None and ds["examples"] > 0
    assert w.blind.get(f"/v1/datasets/{i['cust']}").json()["filename"] == "customer_harmful_looking.jsonl"
    exp = w.blind.get(f"/v1/experiments/{i['exp']}").json()
    assert "filename" not in exp["params"]["datasets"]["alignment"]
    assert exp["params"]["datasets"]["fine_tune"]["filename"] == "customer_harmful_looking.jsonl"
