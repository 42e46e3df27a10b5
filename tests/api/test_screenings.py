"""Screenings through the real app and a real RQ worker (burst mode) on real Redis."""

from __future__ import annotations

import json

from tests.conftest import DEMO, upload


def _datasets(client) -> tuple[str, str]:
    cust = upload(client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    return cust, align


def test_end_to_end_upload_screen_poll_report_scores_subsets(client, run_worker) -> None:
    cust, align = _datasets(client)
    r = client.post(
        "/v1/screenings",
        json={"dataset_id": cust, "alignment_dataset_id": align, "subset_size": 10, "top_k": 3},
    )
    assert r.status_code == 201, r.text
    scr = r.json()
    assert scr["status"] == "queued" and scr["params"]["backend"] == "sentence-transformers"

    run_worker()

    got = client.get(f"/v1/screenings/{scr['id']}").json()
    assert got["status"] == "succeeded", got
    assert got["progress"] == 1.0 and got["tier"] in ("low", "medium", "high", "critical")
    rep = client.get(f"/v1/screenings/{scr['id']}/report").json()["report"]
    assert rep["risk"]["risk_score"] == got["risk_score"]
    assert {p["name"] for p in rep["risk"]["parts"]} == {
        "mean_similarity",
        "tail_similarity",
        "near_alignment_share",
        "harmful_anchor_margin",
        "attack_form_margin",
    }
    # the weighted reading's weights sum to 1; the attack reading is one part of weight 1, and the score is
    # the larger of the two readings
    weighted = [p for p in rep["risk"]["parts"] if p["name"] != "attack_form_margin"]
    assert abs(sum(p["weight"] for p in weighted) - 1.0) < 1e-9
    assert rep["risk"]["risk_score"] == max(rep["risk"]["readings"].values())
    assert rep["customer"]["examples"] == 62 and rep["alignment"]["examples"] == 100
    assert rep["findings"] and rep["top_examples"][0]["nearest_alignment"]
    assert set(rep["distributions"]["customer_max_sim"]["percentiles"]) >= {"p50", "p90", "p99"}

    scores = client.get(f"/v1/screenings/{scr['id']}/scores", params={"limit": 5}).json()
    sims = [d["max_sim"] for d in scores["data"]]
    assert scores["total"] == 62 and sims == sorted(sims, reverse=True) and len(sims) == 5
    assert len(scores["data"][0]["nearest"]) == 3
    asc = client.get(
        f"/v1/screenings/{scr['id']}/scores", params={"side": "alignment", "order": "asc", "limit": 1000}
    ).json()
    a_sims = [d["max_sim"] for d in asc["data"]]
    assert asc["total"] == 100 and a_sims == sorted(a_sims)

    high = client.get(f"/v1/screenings/{scr['id']}/subsets/high_sim")
    assert high.status_code == 200 and high.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in high.text.splitlines()]
    originals = [json.loads(line) for line in (DEMO / "alignment.jsonl").read_text().splitlines()]
    top = sorted(asc["data"], key=lambda d: -d["max_sim"])[:10]
    assert records == [originals[d["record"] - 1] for d in top]
    low = client.get(f"/v1/screenings/{scr['id']}/subsets/low_sim").text.splitlines()
    rnd = client.get(f"/v1/screenings/{scr['id']}/subsets/random").text.splitlines()
    assert len(low) == len(rnd) == 10 and not set(low) & {json.dumps(r) for r in records}

    aud = client.get(f"/v1/screenings/{scr['id']}/audit").json()
    assert aud["object"] == "screening.audit" and 1 <= aud["audit"]["alignment_vendi"] <= 100
    assert 0 <= aud["audit"]["uncovered_share"] <= 1

    evs = client.get(f"/v1/screenings/{scr['id']}/events").json()["data"]
    types = [e["type"] for e in evs]
    assert types[0] == "screening.queued" and types[-1] == "screening.succeeded"
    assert "screening.running" in types


def test_second_screening_reuses_cached_alignment_vectors(client, run_worker) -> None:
    cust, align = _datasets(client)
    other = upload(client, DEMO / "customer_benign_general.jsonl").json()["id"]
    a = client.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}).json()
    run_worker()
    b = client.post("/v1/screenings", json={"dataset_id": other, "alignment_dataset_id": align}).json()
    run_worker()
    rep_a = client.get(f"/v1/screenings/{a['id']}/report").json()["report"]
    rep_b = client.get(f"/v1/screenings/{b['id']}/report").json()["report"]
    assert (rep_a["cache"]["alignment_hit"], rep_a["cache"]["customer_hit"]) == (False, False)
    assert (rep_b["cache"]["alignment_hit"], rep_b["cache"]["customer_hit"]) == (True, False)
    # the harmful-looking set must score above the benign prose set
    assert rep_a["risk"]["risk_score"] > rep_b["risk"]["risk_score"]


def test_list_filters_and_cursor(client, run_worker) -> None:
    cust, align = _datasets(client)
    ids = [
        client.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}).json()["id"]
        for _ in range(3)
    ]
    first = client.get("/v1/screenings", params={"limit": 2}).json()
    assert [s["id"] for s in first["data"]] == ids[::-1][:2] and first["has_more"]
    client.post(f"/v1/screenings/{ids[0]}/cancel")
    run_worker()
    done = client.get("/v1/screenings", params={"status": "succeeded"}).json()["data"]
    assert sorted(s["id"] for s in done) == sorted(ids[1:])
    assert client.get("/v1/screenings", params={"status": "cancelled"}).json()["data"][0]["id"] == ids[0]
    tier = done[0]["tier"]
    assert {s["id"] for s in client.get("/v1/screenings", params={"tier": tier}).json()["data"]} == set(
        ids[1:]
    )
    assert client.get("/v1/screenings", params={"dataset_id": "ds_other"}).json()["data"] == []


def test_cancel_a_queued_screening_never_runs_and_cannot_cancel_twice(client, run_worker) -> None:
    cust, align = _datasets(client)
    scr = client.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}).json()
    r = client.post(f"/v1/screenings/{scr['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    run_worker()
    assert client.get(f"/v1/screenings/{scr['id']}").json()["status"] == "cancelled"
    assert client.get(f"/v1/screenings/{scr['id']}/report").json()["error"]["code"] == "report_not_ready"
    r = client.post(f"/v1/screenings/{scr['id']}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_cancellable"


def test_invalid_requests(client) -> None:
    cust, align = _datasets(client)
    r = client.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": cust})
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_purpose"
    r = client.post("/v1/screenings", json={"dataset_id": "ds_nope", "alignment_dataset_id": align})
    assert r.status_code == 404 and r.json()["error"]["param"] == "dataset_id"
    for bad in (
        {"dataset_id": cust},
        {"dataset_id": cust, "alignment_dataset_id": align, "top_k": 0},
        {"dataset_id": cust, "alignment_dataset_id": align, "backend": "magic"},
        {"dataset_id": cust, "alignment_dataset_id": align, "surprise": 1},
    ):
        r = client.post("/v1/screenings", json=bad)
        assert r.status_code == 422, bad


def test_a_dataset_in_use_cannot_be_deleted_until_the_screening_ends(client) -> None:
    cust, align = _datasets(client)
    scr = client.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}).json()
    r = client.delete(f"/v1/datasets/{align}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "dataset_in_use"
    client.post(f"/v1/screenings/{scr['id']}/cancel")
    assert client.delete(f"/v1/datasets/{align}").status_code == 204
    assert client.get(f"/v1/screenings/{scr['id']}").status_code == 404


def test_not_found_for_every_screening_route(client) -> None:
    for path in ("", "/report", "/scores", "/events", "/audit", "/subsets/high_sim"):
        r = client.get(f"/v1/screenings/scr_nope{path}")
        assert r.status_code == 404, path
        assert r.json()["error"]["type"] == "not_found_error"
    assert client.post("/v1/screenings/scr_nope/cancel").status_code == 404
    assert client.get("/v1/screenings/scr_nope/subsets/everything").status_code == 422


def test_an_example_in_two_datasets_is_represented_once(client, run_worker) -> None:
    lines = (DEMO / "customer_harmful_looking.jsonl").read_bytes().splitlines(keepends=True)
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    a = upload(client, "a.jsonl", content=b"".join(lines[:40])).json()["id"]
    b = upload(client, "b.jsonl", content=b"".join(lines[20:] + lines[20:25])).json()["id"]
    first = client.post("/v1/screenings", json={"dataset_id": a, "alignment_dataset_id": align}).json()
    run_worker()
    second = client.post("/v1/screenings", json={"dataset_id": b, "alignment_dataset_id": align}).json()
    run_worker()
    rep1 = client.get(f"/v1/screenings/{first['id']}/report").json()["report"]
    rep2 = client.get(f"/v1/screenings/{second['id']}/report").json()["report"]
    assert rep1["cache"]["customer"] == {"examples": 40, "from_cache": 0, "computed": 40}
    # 20 examples (and the 5 repeated at the end) are in the first dataset; 22 are new
    assert rep2["cache"]["customer"] == {"examples": 47, "from_cache": 25, "computed": 22}
    s1 = client.get(
        f"/v1/screenings/{first['id']}/scores", params={"sort": "record", "order": "asc", "limit": 1000}
    ).json()["data"]
    s2 = client.get(
        f"/v1/screenings/{second['id']}/scores", params={"sort": "record", "order": "asc", "limit": 1000}
    ).json()["data"]
    for i in range(20):  # record 21.. of the first dataset is record 1.. of the second
        assert abs(s1[20 + i]["max_sim"] - s2[i]["max_sim"]) < 1e-6
    for i in range(5):  # the repeated tail has the same scores as its first occurrence
        assert abs(s2[42 + i]["max_sim"] - s2[i]["max_sim"]) < 1e-6


def test_anchor_signal_with_uploaded_anchor_sets(client, run_worker) -> None:
    cust, align = _datasets(client)
    harmful = upload(client, DEMO / "anchors_harmful.jsonl", purpose="harmful-anchors").json()["id"]
    safe = upload(client, DEMO / "anchors_safe.jsonl", purpose="safe-anchors").json()["id"]
    r = client.post(
        "/v1/screenings",
        json={"dataset_id": cust, "alignment_dataset_id": align, "harmful_anchors_dataset_id": safe},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "harmful_anchors_dataset_id"
    scr = client.post(
        "/v1/screenings",
        json={
            "dataset_id": cust,
            "alignment_dataset_id": align,
            "harmful_anchors_dataset_id": harmful,
            "safe_anchors_dataset_id": safe,
        },
    ).json()
    off = client.post(
        "/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align, "anchors": False}
    ).json()
    run_worker()
    rep = client.get(f"/v1/screenings/{scr['id']}/report").json()["report"]
    assert rep["anchors"]["harmful"]["dataset_id"] == harmful and rep["anchors"]["safe"]["examples"] == 60
    # a tenant's own anchors are never taken for the bundled ones (whose vectors all tenants share)
    assert "bundled" not in rep["anchors"]["harmful"] and "bundled" not in rep["anchors"]["safe"]
    parts = {p["name"]: p for p in rep["risk"]["parts"]}
    assert parts["harmful_anchor_margin"]["weight"] == 0.3
    assert abs(sum(p["weight"] for n, p in parts.items() if n != "attack_form_margin") - 1) < 1e-9
    # the harmful anchors' own margins sit above the safe anchors'
    assert rep["anchors"]["harmful_anchor_margin"]["mean"] > rep["anchors"]["safe_anchor_margin"]["mean"]
    page = client.get(f"/v1/screenings/{scr['id']}/scores", params={"sort": "anchor_margin"}).json()["data"]
    margins = [d["anchor_margin"] for d in page]
    assert margins == sorted(margins, reverse=True)
    rep_off = client.get(f"/v1/screenings/{off['id']}/report").json()["report"]
    assert rep_off["anchors"] is None
    assert "harmful_anchor_margin" not in {p["name"] for p in rep_off["risk"]["parts"]}
    r = client.get(f"/v1/screenings/{off['id']}/scores", params={"sort": "anchor_margin"})
    assert r.status_code == 400
