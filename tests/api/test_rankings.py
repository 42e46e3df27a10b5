from __future__ import annotations

from tests.conftest import DEMO, upload


def test_rank_candidates_and_recommend_the_least_similar(client, run_worker) -> None:
    cust = upload(client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
    close = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    far = upload(client, DEMO / "customer_benign_general.jsonl", purpose="alignment").json()["id"]
    r = client.post(
        "/v1/rankings",
        json={
            "dataset_id": cust,
            "anchors": False,
            "candidates": [
                {"name": "refusal-aligned", "alignment_dataset_id": close},
                {"name": "chat-aligned", "alignment_dataset_id": far},
            ],
        },
    )
    assert r.status_code == 201, r.text
    ranking = r.json()
    assert ranking["status"] == "running" and ranking["recommendation"] is None
    run_worker()
    got = client.get(f"/v1/rankings/{ranking['id']}").json()
    assert got["status"] == "succeeded"
    assert [c["name"] for c in got["candidates"]] == ["chat-aligned", "refusal-aligned"]
    assert [c["rank"] for c in got["candidates"]] == [1, 2]
    assert got["candidates"][0]["risk_score"] < got["candidates"][1]["risk_score"]
    assert got["recommendation"]["name"] == "chat-aligned"
    assert client.get("/v1/rankings").json()["data"][0]["id"] == ranking["id"]
    scr = client.get(f"/v1/screenings/{got['candidates'][0]['screening_id']}").json()
    assert scr["params"]["candidate"] == "chat-aligned"


def test_ranking_input_errors_and_not_found(client) -> None:
    cust = upload(client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    one = {"dataset_id": cust, "candidates": [{"name": "a", "alignment_dataset_id": align}]}
    assert client.post("/v1/rankings", json=one).status_code == 422
    dup = {"dataset_id": cust, "candidates": [{"name": "a", "alignment_dataset_id": align}] * 2}
    r = client.post("/v1/rankings", json=dup)
    assert r.status_code == 400 and r.json()["error"]["param"] == "candidates"
    bad = {
        "dataset_id": cust,
        "candidates": [
            {"name": "a", "alignment_dataset_id": align},
            {"name": "b", "alignment_dataset_id": "ds_nope"},
        ],
    }
    assert client.post("/v1/rankings", json=bad).status_code == 404
    assert client.get("/v1/screenings").json()["data"] == []  # nothing was queued
    assert client.get("/v1/rankings/rank_nope").status_code == 404
