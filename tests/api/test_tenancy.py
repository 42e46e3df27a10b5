"""Tenant isolation: another tenant's ids answer 404 on every route; alignment texts need a scope."""

from __future__ import annotations

import json
import re

from tests.conftest import DEMO, client_as, upload


def _tenant_a(client, run_worker) -> dict[str, str]:
    cust = upload(client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    done = client.post(
        "/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align, "subset_size": 5}
    ).json()["id"]
    run_worker()
    body = {"dataset_id": cust, "alignment_dataset_id": align}
    queued = client.post("/v1/screenings", json=body).json()["id"]
    ranking = client.post(
        "/v1/rankings",
        json={"dataset_id": cust, "candidates": [{"name": n, "alignment_dataset_id": align} for n in "ab"]},
    ).json()["id"]
    spec = {"alignment": {"dataset_id": align}, "fine_tune": {"dataset_id": cust}}
    exp = client.post("/v1/experiments", json=spec).json()["id"]  # queued: B probes real ids
    cmp = client.post("/v1/comparisons", json=spec).json()["id"]
    return {
        "cust": cust,
        "align": align,
        "done": done,
        "queued": queued,
        "ranking": ranking,
        "exp": exp,
        "cmp": cmp,
    }


def test_every_route_with_a_second_tenants_key_gets_404_or_403(client, other_client, run_worker) -> None:
    a = _tenant_a(client, run_worker)
    assert client.get(f"/v1/screenings/{a['done']}").json()["status"] == "succeeded"
    a_key = client.get("/v1/datasets").request.headers["authorization"]
    rules = [{"metric": "risk_score", "threshold": 50, "decision": "review"}]
    hook = {"url": "https://93.184.216.34/hook", "events": ["screening.succeeded"]}  # never called here
    assert client.post("/v1/policies", json={"name": "a-policy", "rules": rules}).status_code == 201
    a["endpoint"] = client.post("/v1/webhook_endpoints", json=hook).json()["id"]
    secrets = set(a.values())
    params = {
        "dataset_id": [a["cust"], a["align"]],
        "screening_id": [a["done"], a["queued"]],
        "subset": ["high_sim"],
        "key_id": ["key_anything"],
        "ranking_id": [a["ranking"]],
        # tenant A's queued experiment and comparison (their runs are in tests/api/test_experiments.py)
        "experiment_id": [a["exp"], "exp_0000000000000000abcdef0123"],
        "comparison_id": [a["cmp"], "cmp_0000000000000000abcdef0123"],
        "name": ["generations", "alignment_adapter"],
        "endpoint_id": [a["endpoint"], "we_0000000000000000abcdef0123"],
        "delivery_id": ["wd_0000000000000000abcdef0123"],
    }
    bodies = {
        ("POST", "/v1/screenings"): {"dataset_id": a["cust"], "alignment_dataset_id": a["align"]},
        ("POST", "/v1/rankings"): {
            "dataset_id": a["cust"],
            "candidates": [{"name": n, "alignment_dataset_id": a["align"]} for n in "ab"],
        },
        ("POST", "/v1/experiments"): {
            "fine_tune": {"dataset_id": a["cust"]},
            "alignment": {"dataset_id": a["align"]},
        },
        ("POST", "/v1/comparisons"): {
            "fine_tune": {"dataset_id": a["cust"]},
            "alignment": {"dataset_id": a["align"]},
        },
        ("POST", "/v1/calibration/refit"): {},
        ("POST", "/v1/screenings/{screening_id}/rescreen"): {"variant": "filtered"},
        ("POST", "/v1/policies"): {"name": "b-policy", "rules": rules},
        ("PUT", "/v1/policies/{name}"): {"rules": rules},  # writes B's own policy of that name
        ("POST", "/v1/webhook_endpoints"): hook,
        ("PATCH", "/v1/webhook_endpoints/{endpoint_id}"): {"events": ["screening.failed"]},
        ("POST", "/v1/admin/tenants"): {"id": "stolen"},
        ("POST", "/v1/admin/keys"): {"tenant_id": "test", "role": "admin"},
    }
    walked = []
    # Every route the API documents (the OpenAPI schema is the contract, whatever the router internals).
    for template, ops in client.get("/openapi.json").json()["paths"].items():
        if not template.startswith("/v1/"):
            continue
        names = re.findall(r"{(\w+)}", template)
        for method in (m.upper() for m in ops):
            walked.append((method, template))
            combos: list[dict[str, str]] = [{}]
            for n in names:
                combos = [{**c, n: v} for c in combos for v in params[n]]
            for combo in combos:
                path = template.format(**combo)
                if (method, template) == ("POST", "/v1/datasets"):
                    r = upload(other_client, DEMO / "customer_benign_lists.jsonl")
                    assert r.status_code == 201  # B's own dataset, nothing of A's
                elif (method, template) == ("POST", "/v1/datasets/validate"):
                    data = (DEMO / "customer_benign_lists.jsonl").read_bytes()
                    r = other_client.post(path, files={"file": ("b.jsonl", data)})  # nothing is stored
                else:
                    r = other_client.request(method, path, json=bodies.get((method, template)))
                allowed = {403} if template.startswith("/v1/admin") else {404}
                if not names and not template.startswith("/v1/admin"):
                    allowed = {200, 201, 404}
                if template.startswith("/v1/policies/{name}"):
                    allowed = {200, 201, 204, 404}  # B's own policy of that name (names are per tenant)
                assert r.status_code in allowed, (method, path, r.status_code, r.text[:200])
                # an id B sent may be echoed in the 404's message; any other of A's ids is a leak
                sent = path + json.dumps(bodies.get((method, template)))
                leaked = [s for s in secrets if s in r.text and s not in sent]
                assert not leaked, (method, path, leaked)
    with_ids = [w for w in walked if "{" in w[1]]
    assert len(walked) >= 17 and len(with_ids) >= 9, walked
    # B's lists hold only B's things, whatever the filters
    assert other_client.get("/v1/screenings", params={"dataset_id": a["cust"]}).json()["data"] == []
    assert all(d["id"] not in secrets for d in other_client.get("/v1/datasets").json()["data"])
    # and A's things are untouched by B's attempts
    assert client.get(f"/v1/screenings/{a['queued']}").json()["status"] == "queued"
    assert client.get(f"/v1/datasets/{a['align']}").status_code == 200
    assert client.get(f"/v1/experiments/{a['exp']}").json()["status"] == "queued"
    assert a_key.startswith("Bearer ")


def test_alignment_texts_need_the_scope_and_reports_can_be_redacted(client, run_worker) -> None:
    a = _tenant_a(client, run_worker)
    full = client.get(f"/v1/screenings/{a['done']}/report").json()
    assert full["redacted"] is False
    near = full["report"]["top_examples"][0]["nearest_alignment"][0]
    assert near["example"]["prompt"]
    align_texts = [
        v
        for line in (DEMO / "alignment.jsonl").read_text().splitlines()
        for v in json.loads(line).values()
        if len(v) > 40
    ]
    assert any(t[:40] in json.dumps(full) for t in align_texts)

    red = client.get(f"/v1/screenings/{a['done']}/report", params={"redact": True}).json()
    assert red["redacted"] is True
    body = json.dumps(red)
    assert not any(t[:40] in body for t in align_texts)
    red_near = red["report"]["top_examples"][0]["nearest_alignment"][0]
    assert red_near == {"record": near["record"], "sim": near["sim"]}
    assert "filename" not in red["report"]["alignment"] and "sha256" not in red["report"]["alignment"]
    assert red["report"]["risk"] == full["report"]["risk"]  # the numbers are all there
    assert red["report"]["top_examples"][0]["example"] == full["report"]["top_examples"][0]["example"]

    viewer = client_as(client, "test", scopes=[])
    r = viewer.get(f"/v1/screenings/{a['done']}/report")
    assert (
        r.status_code == 200
        and r.json()["redacted"] is True
        and not any(t[:40] in r.text for t in align_texts)
    )
    r = viewer.get(f"/v1/screenings/{a['done']}/subsets/high_sim")
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    r = viewer.get(f"/v1/datasets/{a['align']}/preview")
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    assert viewer.get(f"/v1/datasets/{a['cust']}/preview").status_code == 200
    assert viewer.get(f"/v1/screenings/{a['done']}/scores").status_code == 200


def test_vector_cache_is_not_shared_across_tenants(client, other_client, run_worker) -> None:
    """Tenant B screening A's exact alignment set must not hit A's cache (a membership oracle)."""
    a = _tenant_a(client, run_worker)
    client.post(f"/v1/experiments/{a['exp']}/cancel")  # A's experiments stay out of the workers below
    client.post(f"/v1/comparisons/{a['cmp']}/cancel")
    cust = upload(other_client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
    align = upload(other_client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    scr = other_client.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}).json()
    run_worker()
    rep = other_client.get(f"/v1/screenings/{scr['id']}/report").json()["report"]
    assert rep["cache"]["alignment"]["from_cache"] == 0 and rep["cache"]["customer"]["from_cache"] == 0
    # the bundled anchors hold no tenant's data: their vectors are shared, computed once for all tenants
    compliance = rep["anchors"]["forms"]["compliance"]
    assert compliance["harmful"]["bundled"] is True
    assert compliance["cache"]["harmful"] == {"examples": 60, "from_cache": 60, "computed": 0}
    # while within one tenant the cache works
    again = other_client.post(
        "/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}
    ).json()
    run_worker()
    rep = other_client.get(f"/v1/screenings/{again['id']}/report").json()["report"]
    assert rep["cache"]["alignment_hit"] is True


def test_every_dashboard_page_with_a_second_tenants_key_shows_nothing_of_the_first(
    client, other_client, run_worker
) -> None:
    """The dashboard's routes, walked from its routers (it is not in the OpenAPI schema)."""
    from tests.api.test_scope import _dashboard_routes

    a = _tenant_a(client, run_worker)
    secrets = set(a.values())
    values = {
        "screening_id": [a["done"], a["queued"]],
        "experiment_id": [a["exp"]],
        "subset": ["high_sim"],
        "name": ["generations"],
    }
    walked = 0
    for route in _dashboard_routes():
        combos: list[dict[str, str]] = [{}]
        for n in re.findall(r"{(\w+)}", route.path):
            combos = [{**c, n: v} for c in combos for v in values[n]]
        for combo in combos:
            path = route.path.format(**combo)
            r = other_client.get(path, follow_redirects=False)
            walked += 1
            assert r.status_code < 500, (path, r.status_code)
            if combo:
                assert r.status_code == 404, (path, r.status_code)
            leaked = [s for s in secrets if s in r.text and s not in path]
            assert not leaked, (path, leaked)
    assert walked >= 10
