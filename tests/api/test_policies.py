"""Policies through the real app: CRUD and versions, and decisions made by a real worker."""

from __future__ import annotations

import json

from tests.conftest import DEMO, upload

REJECT_ALL = {"rules": [{"metric": "risk_score", "threshold": 0, "decision": "reject"}]}


def _screen(client, **extra) -> dict:
    cust = upload(client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
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
    return r.json()


def test_fresh_tenant_has_the_builtin_default(client) -> None:
    data = client.get("/v1/policies").json()["data"]
    assert [(p["name"], p["version"], p["builtin"]) for p in data] == [("default", 0, True)]
    assert data[0]["row_threshold"] == 75.0 and data[0]["rules"][0]["threshold"] == 75.0


def test_crud_and_versions(client, other_client) -> None:
    r = client.post("/v1/policies", json={"name": "strict", **REJECT_ALL})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1
    assert client.post("/v1/policies", json={"name": "strict", **REJECT_ALL}).status_code == 409
    v2 = client.put(
        "/v1/policies/strict",
        json={
            "rules": [{"metric": "flagged_rows", "threshold": 1, "decision": "review"}],
            "row_threshold": 60,
        },
    ).json()
    assert v2["version"] == 2 and v2["row_threshold"] == 60
    assert client.get("/v1/policies/strict").json()["version"] == 2
    v1 = client.get("/v1/policies/strict", params={"version": 1}).json()
    assert v1["rules"] == [{"metric": "risk_score", "part": None, "threshold": 0.0, "decision": "reject"}]
    assert [p["version"] for p in client.get("/v1/policies/strict/versions").json()["data"]] == [1, 2]
    assert other_client.get("/v1/policies/strict").status_code == 404  # tenants never see each other's
    assert client.delete("/v1/policies/strict").status_code == 204
    assert client.get("/v1/policies/strict").status_code == 404
    assert client.get("/v1/policies/strict", params={"version": 2}).status_code == 200  # kept for history
    assert client.delete("/v1/policies/strict").status_code == 404


def test_invalid_policies_are_refused(client) -> None:
    bad = [
        {"name": "x", "rules": []},
        {"name": "x", "rules": [{"metric": "part", "threshold": 1, "decision": "reject"}]},
        {
            "name": "x",
            "rules": [
                {"metric": "risk_score", "part": "tail_similarity", "threshold": 1, "decision": "reject"}
            ],
        },
        {"name": "x", "rules": [{"metric": "risk", "threshold": 1, "decision": "reject"}]},
        {"name": "x", "rules": [{"metric": "risk_score", "threshold": 1, "decision": "maybe"}]},
        {"name": "Bad Name", **REJECT_ALL},
    ]
    for body in bad:
        assert client.post("/v1/policies", json=body).status_code == 422, body
    cust = upload(client, DEMO / "customer_benign_general.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    r = client.post(
        "/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align, "policy": "nope"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "policy_not_found"


def test_policy_decides_reject_end_to_end_and_redecides_without_recompute(client, run_worker) -> None:
    strict = {"name": "strict", **REJECT_ALL, "row_threshold": 10}
    assert client.post("/v1/policies", json=strict).status_code == 201
    scr = _screen(client, policy="strict")
    plain = _screen(client)
    run_worker()

    got = client.get(f"/v1/screenings/{scr['id']}").json()
    assert got["status"] == "succeeded" and got["decision"] == "reject", got
    assert got["policy"] == "strict" and got["policy_version"] == 1
    rule = got["decision_rule"]["rule"]
    assert rule["metric"] == "risk_score" and rule["threshold"] == 0 and rule["value"] == got["risk_score"]
    rep = client.get(f"/v1/screenings/{scr['id']}/report").json()
    assert rep["decision"] == "reject" and rep["decision_rule"]["policy_version"] == 1

    # flagged rows: above the policy's row threshold, highest first, in the customer's own records
    fl = client.get(f"/v1/screenings/{scr['id']}/flagged").json()
    originals = [json.loads(x) for x in (DEMO / "customer_harmful_looking.jsonl").read_text().splitlines()]
    assert fl["row_threshold"] == 10 and fl["total"] == got["decision_rule"]["flagged_rows"] > 0
    row_scores = [r["row_score"] for r in fl["data"]]
    assert row_scores == sorted(row_scores, reverse=True) and min(row_scores) > 10
    for r in fl["data"]:
        assert r["record"] == originals[r["record_number"] - 1] and r["line"] == r["record_number"]
        assert set(r["parts"]) == {"similarity"} and r["nearest_alignment"]
    assert len(client.get(f"/v1/screenings/{scr['id']}/flagged", params={"limit": 1}).json()["data"]) == 1
    kept = client.get(f"/v1/screenings/{scr['id']}/datasets/filtered")
    assert kept.status_code == 200 and kept.headers["content-type"].startswith("application/x-ndjson")
    dropped = {r["record_number"] for r in fl["data"]}
    assert [json.loads(x) for x in kept.text.splitlines()] == [
        rec for i, rec in enumerate(originals, start=1) if i not in dropped
    ]

    dflt = client.get(f"/v1/screenings/{plain['id']}").json()
    assert dflt["decision"] in ("approve", "review", "reject") and dflt["policy_version"] == 0
    assert dflt["decision_rule"]["policy"] == "default"

    # a new version that approves everything: judged again from the stored report, no worker run
    client.put(
        "/v1/policies/strict",
        json={"rules": [{"metric": "risk_score", "threshold": 1000, "decision": "reject"}]},
    )
    again = client.post(f"/v1/screenings/{scr['id']}/decision", json={})
    assert again.status_code == 200, again.text
    assert again.json()["decision"] == "approve" and again.json()["policy_version"] == 2
    old = client.post(f"/v1/screenings/{scr['id']}/decision", json={"version": 1}).json()
    assert old["decision"] == "reject" and old["policy_version"] == 1
    types = [e["type"] for e in client.get(f"/v1/screenings/{scr['id']}/events").json()["data"]]
    assert types.count("decision.made") == 3
    assert client.post(f"/v1/screenings/{scr['id']}/decision", json={"policy": "nope"}).status_code == 404
    assert client.post("/v1/screenings/scr_nope/decision", json={}).status_code == 404


def test_redecide_before_the_report_is_a_conflict(client) -> None:
    scr = _screen(client)
    r = client.post(f"/v1/screenings/{scr['id']}/decision", json={})
    assert r.status_code == 409 and r.json()["error"]["code"] == "report_not_ready"
    r = client.get(f"/v1/screenings/{scr['id']}/flagged")
    assert r.status_code == 404 and r.json()["error"]["code"] == "report_not_ready"


def test_integers_past_sql_columns_in_a_query_are_a_422_not_a_500(client) -> None:
    """Found by the schema fuzzer: `?version=2**63` reached SQL and the driver raised (a 500). The bound is
    PostgreSQL's integer column (2**31 - 1), the narrower of the two backends."""
    too_big = 2**31
    for path in (
        f"/v1/policies/default?version={too_big}",
        f"/v1/screenings/scr_none/events?after={too_big}",
        f"/v1/experiments/exp_none/events?after={too_big}",
    ):
        r = client.get(path)
        assert r.status_code == 422, (path, r.text)
    assert client.get(f"/v1/policies/default?version={too_big - 1}").status_code == 404
