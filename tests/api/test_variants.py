"""Flagged, filtered and augmented datasets through the real app and a real worker: every container the
product reads round-trips (download, decode independently, upload again), the augmented set needs the
`alignment:read` scope, and a re-screened filtered set has a lower risk than the original."""

from __future__ import annotations

import csv
import gzip
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from tests.conftest import DEMO, client_as, upload

CUSTOMER = DEMO / "customer_benign_lists.jsonl"  # alpaca, like the alignment set: mixes keep the form
ALIGNMENT = DEMO / "alignment.jsonl"
CONTAINERS = ("jsonl", "json", "csv", "parquet", "jsonl.gz", "jsonl.zst", "csv.gz", "json.zst")
LOOSE = {  # flags the rows most similar to the alignment set, not all of them
    "name": "loose",
    "rules": [{"metric": "flagged_rows", "threshold": 1, "decision": "review"}],
    "row_threshold": 10,
}


def _records(path: Any = CUSTOMER) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def encode(records: list[dict[str, Any]], container: str) -> bytes:
    """The records in a container, written with the standard libraries (not ftguard's writers)."""
    inner, _, z = container.partition(".")
    if inner == "jsonl":
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
    elif inner == "json":
        data = json.dumps(records, indent=1).encode()
    elif inner == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
        data = buf.getvalue().encode()
    else:
        out = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records), out)
        data = out.getvalue()
    if z == "gz":
        return gzip.compress(data)
    if z == "zst":
        return zstandard.ZstdCompressor().compress(data)
    return data


def decode(data: bytes, container: str) -> list[Any]:
    inner, _, z = container.partition(".")
    if z == "gz":
        data = gzip.decompress(data)
    elif z == "zst":
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if inner == "jsonl":
        return [json.loads(x) for x in data.splitlines() if x.strip()]
    if inner == "json":
        return list(json.loads(data))
    if inner == "csv":
        return list(csv.DictReader(io.StringIO(data.decode())))
    return list(pq.read_table(io.BytesIO(data)).to_pylist())


def _screen(client: Any, cust: str, align: str, **extra: Any) -> str:
    body = {"dataset_id": cust, "alignment_dataset_id": align, "subset_size": 10, "anchors": False}
    r = client.post("/v1/screenings", json=body | extra)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _reupload(client: Any, data: bytes, container: str, expect: int) -> dict[str, Any]:
    r = upload(client, f"again.{container}", content=data)
    assert r.status_code == 201, (container, r.text[:300])
    assert r.json()["container"] == container and r.json()["examples"] == expect, r.json()
    return dict(r.json())


def test_every_container_round_trips_filtered_flagged_and_augmented(client, run_worker) -> None:
    originals, safety = _records(), _records(ALIGNMENT)
    assert client.post("/v1/policies", json=LOOSE).status_code == 201
    align = upload(client, ALIGNMENT, purpose="alignment").json()["id"]
    runs = {}
    for c in CONTAINERS:
        r = upload(client, f"customer.{c}", content=encode(originals, c))
        assert r.status_code == 201 and r.json()["container"] == c, (c, r.text[:300])
        runs[c] = _screen(client, r.json()["id"], align, policy="loose")
    run_worker()
    for c, scr in runs.items():
        assert client.get(f"/v1/screenings/{scr}").json()["status"] == "succeeded", c
        page = client.get(f"/v1/screenings/{scr}/flagged", params={"limit": 10_000}).json()
        flagged = {row["record_number"] for row in page["data"]}
        assert 0 < len(flagged) == page["total"] < len(originals), (c, page["total"])
        assert all(row["nearest_harmful_anchor"] is None for row in page["data"])  # screened without

        kept = client.get(f"/v1/screenings/{scr}/datasets/filtered")
        assert kept.status_code == 200, kept.text
        assert kept.headers["content-disposition"].endswith(f'-filtered.{c}"')
        want = [rec for i, rec in enumerate(originals, start=1) if i not in flagged]
        assert decode(kept.content, c) == want, c
        _reupload(client, kept.content, c, len(want))

        rows = client.get(f"/v1/screenings/{scr}/datasets/flagged")
        assert rows.status_code == 200
        assert decode(rows.content, c) == [originals[i - 1] for i in sorted(flagged)], c
        _reupload(client, rows.content, c, len(flagged))

        for selection in ("random", "nearest"):
            params: dict[str, Any] = {"share": 0.25, "selection": selection, "seed": 3}
            mix = client.get(f"/v1/screenings/{scr}/datasets/augmented", params=params)
            assert mix.status_code == 200, mix.text
            got = decode(mix.content, c)
            added = round(0.25 * len(originals))
            assert len(got) == len(originals) + added, (c, selection, len(got))
            assert [r for r in got if r in originals] == originals  # in order, none lost
            extra = [r for r in got if r not in originals]
            assert len(extra) == added and all(r in safety for r in extra), (c, selection)
            assert got[-1] in originals and got[0] in originals  # spread through, not appended
            _reupload(client, mix.content, c, len(got))
            if selection == "nearest" and c == "jsonl":
                top = client.get(
                    f"/v1/screenings/{scr}/scores",
                    params={"side": "alignment", "sort": "max_sim", "order": "desc", "limit": added},
                ).json()["data"]
                assert sorted(safety.index(r) + 1 for r in extra) == sorted(t["record"] for t in top)
    # the same seed draws the same records; another draws others
    scr = runs["jsonl"]
    one, two, other = (
        client.get(f"/v1/screenings/{scr}/datasets/augmented", params={"share": 0.25, "seed": s}).content
        for s in (3, 3, 4)
    )
    assert one == two != other
    filtered_mix = client.get(
        f"/v1/screenings/{scr}/datasets/augmented", params={"share": 1, "filtered": True}
    )
    n_flagged = client.get(f"/v1/screenings/{scr}/flagged").json()["total"]
    got = decode(filtered_mix.content, "jsonl")
    kept_n = len(originals) - n_flagged
    assert len(got) == kept_n + min(kept_n, len(safety)), len(got)


def test_augmented_falls_back_to_chat_messages_and_needs_the_scope(client, run_worker) -> None:
    """Prompt-completion CSV customer data, alpaca alignment records: they do not fit the CSV's columns,
    so the mix is JSONL of openai-chat messages (README: Flagged rows and safer datasets)."""
    originals = _records(DEMO / "customer_harmful_looking.jsonl")
    assert set(originals[0]) == {"prompt", "completion"}
    cust = upload(client, "pc.csv", content=encode(originals, "csv")).json()["id"]
    align = upload(client, ALIGNMENT, purpose="alignment").json()["id"]
    scr = _screen(client, cust, align)
    chat = _records(DEMO / "customer_benign_general.jsonl")  # openai-chat: alpaca records fit as messages
    chat_scr = _screen(client, upload(client, DEMO / "customer_benign_general.jsonl").json()["id"], align)
    run_worker()
    mix = client.get(f"/v1/screenings/{chat_scr}/datasets/augmented", params={"share": 0.1})
    assert "form=original" in mix.headers["ftguard-variant"]
    got = decode(mix.content, "jsonl")
    assert [r for r in got if r in chat] == chat and len(got) == len(chat) + round(0.1 * len(chat))
    assert all(set(r) == {"messages"} for r in got)

    mix = client.get(f"/v1/screenings/{scr}/datasets/augmented", params={"share": 0.1})
    assert mix.status_code == 200 and mix.headers["content-type"].startswith("application/x-ndjson")
    assert "form=chat" in mix.headers["ftguard-variant"]
    got = decode(mix.content, "jsonl")
    assert len(got) == len(originals) + round(0.1 * len(originals))
    assert all(set(r) == {"messages"} for r in got)
    assert got[0]["messages"] == [
        {"role": "user", "content": originals[0]["prompt"]},
        {"role": "assistant", "content": originals[0]["completion"]},
    ]
    assert _reupload(client, mix.content, "jsonl", len(got))["format"] == "openai-chat"

    blind = client_as(client, "test", scopes=[])
    r = blind.get(f"/v1/screenings/{scr}/datasets/augmented")
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", r.text
    r = blind.post(f"/v1/screenings/{scr}/rescreen", json={"variant": "augmented"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", r.text
    assert blind.get(f"/v1/screenings/{scr}/datasets/filtered").status_code == 200  # customer data only
    for bad in (0, -0.1, 1.5, "x"):
        r = client.get(f"/v1/screenings/{scr}/datasets/augmented", params={"share": bad})
        assert r.status_code == 422 and r.json()["error"]["param"] == "share", (bad, r.text)
    r = client.post(f"/v1/screenings/{scr}/rescreen", json={"variant": "augmented", "share": 2})
    assert r.status_code == 422, r.text
    r = client.get(f"/v1/screenings/{scr}/datasets/augmented", params={"selection": "best"})
    assert r.status_code == 422


def test_flagged_rows_name_their_nearest_harmful_anchor_and_old_reports_answer_null(client) -> None:
    """Straight on stored scores (no worker): with the anchor index stored, each flagged row names the
    anchor; a report stored before the worker kept it answers null."""
    import numpy as np

    from app.core.storage import scores_key
    from app.models import Report
    from app.screenings import scores

    cust = upload(client, CUSTOMER).json()["id"]
    align = upload(client, ALIGNMENT, purpose="alignment").json()["id"]
    services = client.app.state.ftguard.services
    body = {
        "risk": {
            "risk_score": 40.0,
            "parts": [],
            "reference_levels": {"floor": 0.2, "near": 0.5, "high": 0.6},
            "anchor_levels": {"harmful": 0.1},
        }
    }
    ids = []
    for with_index in (True, False):
        scr = _screen(client, cust, align)
        arrays = {
            "c_max": np.array([0.9, 0.1, 0.95], dtype=np.float32),
            "c_topk_idx": np.array([[4], [0], [7]], dtype=np.int64),
            "c_topk_sim": np.array([[0.9], [0.1], [0.95]], dtype=np.float32),
            "c_anchor_margin": np.array([0.08, -0.2, 0.2], dtype=np.float32),
        }
        if with_index:
            arrays["c_anchor_harmful_idx_compliance"] = np.array([11, 3, 42], dtype=np.int64)
            arrays["c_anchor_harmful_sim_compliance"] = np.array([0.5, 0.1, 0.7], dtype=np.float32)
        key = scores_key("test", scr)
        scores.save(services.store, key, arrays)
        with services.db.session() as s:
            s.add(Report(screening_id=scr, tenant_id="test", body=body, scores_key=key))
            s.commit()
        ids.append(scr)
    rows = client.get(f"/v1/screenings/{ids[0]}/flagged").json()["data"]
    assert [r["record_number"] for r in rows] == [3, 1]  # 100 and 90 over the default 75
    assert rows[0]["nearest_harmful_anchor"] == {
        "form": "compliance",
        "anchors": {"bundled": "anchors_harmful.jsonl"},
        "record": 43,
        "sim": 0.7,
        "margin": 0.2,
    }
    assert rows[1]["nearest_harmful_anchor"]["record"] == 12
    assert rows[0]["nearest_alignment"][0]["record"] == 8
    old = client.get(f"/v1/screenings/{ids[1]}/flagged").json()["data"]
    assert [r["record_number"] for r in old] == [3, 1]
    assert all(r["nearest_harmful_anchor"] is None for r in old)


def test_rescreened_filtered_lists_set_has_lower_risk(client, other_client, run_worker) -> None:
    """The bundled list-heavy set, screened with the anchor pass (MiniLM anchors in the suite, see
    conftest), then its filtered set re-screened by one request: lower risk, measured and printed."""
    cust = upload(client, DEMO / "customer_benign_lists.jsonl").json()["id"]
    align = upload(client, ALIGNMENT, purpose="alignment").json()["id"]
    base = _screen(client, cust, align, anchors=True)
    run_worker()
    before = client.get(f"/v1/screenings/{base}").json()
    assert before["status"] == "succeeded", before
    fl = client.get(f"/v1/screenings/{base}/flagged").json()
    assert 0 < fl["total"] < 60, fl["total"]
    assert all(r["nearest_harmful_anchor"]["record"] >= 1 for r in fl["data"])

    r = client.post(
        f"/v1/screenings/{base}/rescreen", json={"variant": "filtered"}, headers={"Idempotency-Key": "rs-1"}
    )
    assert r.status_code == 201, r.text
    after = r.json()
    assert (
        after["baseline"]["screening_id"] == base and after["baseline"]["risk_score"] == before["risk_score"]
    )
    assert after["baseline"]["removed"] == fl["total"] and after["alignment_dataset_id"] == align
    assert after["params"]["anchors"] is True and after["policy"] == before["policy"]
    again = client.post(
        f"/v1/screenings/{base}/rescreen", json={"variant": "filtered"}, headers={"Idempotency-Key": "rs-1"}
    )
    assert again.json()["id"] == after["id"] and again.headers.get("idempotent-replayed") == "true"
    assert (
        other_client.post(f"/v1/screenings/{base}/rescreen", json={"variant": "filtered"}).status_code == 404
    )
    mixed = client.post(
        f"/v1/screenings/{base}/rescreen",
        json={"variant": "augmented", "share": 0.1, "selection": "nearest"},
    ).json()
    assert mixed["baseline"]["added"] == 6 and mixed["baseline"]["selection"] == "nearest", mixed
    blind = client_as(client, "test", scopes=[])  # the mix holds alignment records: its texts need the scope
    derived = client.get(f"/v1/datasets/{mixed['dataset_id']}").json()["stats"]["derived"]
    assert derived["alignment_records"] == 6
    r = blind.get(f"/v1/datasets/{mixed['dataset_id']}/preview")
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    assert blind.get(f"/v1/datasets/{after['dataset_id']}/preview").status_code == 200
    run_worker()
    for path in ("report", "flagged", "datasets/filtered", "datasets/flagged"):
        r = blind.get(f"/v1/screenings/{mixed['id']}/{path}")
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", (path, r.text)
    r = blind.get(f"/dashboard/screenings/{mixed['id']}/report.html")
    assert r.status_code == 403, r.status_code
    page = blind.get(f"/dashboard/screenings/{mixed['id']}")
    texts = [rec["output"][:40] for rec in _records(ALIGNMENT)]
    assert page.status_code == 200 and not [t for t in texts if t in page.text]
    mixed_rep = client.get(f"/v1/screenings/{mixed['id']}/report").json()
    shown = json.dumps([e["example"] for e in mixed_rep["report"]["top_examples"]])
    assert [t for t in texts if t in shown]  # the positive control: as customer examples, they show
    assert mixed_rep["report"]["customer"]["examples"] == 66
    assert mixed_rep["baseline"]["variant"] == "augmented"
    done = client.get(f"/v1/screenings/{after['id']}").json()
    rep = client.get(f"/v1/screenings/{after['id']}/report").json()
    assert done["status"] == "succeeded" and rep["baseline"]["screening_id"] == base
    assert rep["report"]["customer"]["examples"] == 60 - fl["total"]
    print(
        f"\nlist-heavy demo set: {fl['total']} of 60 rows flagged (row_threshold {fl['row_threshold']}); "
        f"risk {before['risk_score']:.1f} ({before['tier']}) -> filtered {done['risk_score']:.1f} "
        f"({done['tier']})"
    )
    assert done["risk_score"] < before["risk_score"]
    # the same variant again: the stored dataset is reused (one row per content), a new screening made
    third = client.post(f"/v1/screenings/{base}/rescreen", json={"variant": "filtered"}).json()
    assert third["dataset_id"] == after["dataset_id"] and third["id"] != after["id"]
