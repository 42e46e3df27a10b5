from __future__ import annotations

import json

from tests.conftest import DEMO, stored_blobs, upload


def test_upload_get_list_preview_delete(client) -> None:
    r = upload(client, DEMO / "customer_benign_general.jsonl")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["object"] == "dataset" and ds["status"] == "ready" and ds["format"] == "openai-chat"
    assert ds["examples"] == ds["stats"]["examples"] > 0
    assert client.get(f"/v1/datasets/{ds['id']}").json() == ds
    prev = client.get(f"/v1/datasets/{ds['id']}/preview", params={"limit": 2}).json()
    assert [row["record"] for row in prev["data"]] == [1, 2]
    assert prev["data"][0]["messages"][-1]["role"] == "assistant"
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{ds['id']}").status_code == 404


def test_list_is_paged_by_cursor_and_filtered(client) -> None:
    ids = [upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"] for _ in range(3)]
    ids.append(upload(client, DEMO / "customer_benign_lists.jsonl").json()["id"])
    page1 = client.get("/v1/datasets", params={"limit": 2}).json()
    assert page1["object"] == "list" and page1["has_more"] is True
    assert [d["id"] for d in page1["data"]] == ids[::-1][:2]
    page2 = client.get("/v1/datasets", params={"limit": 2, "after": page1["data"][-1]["id"]}).json()
    assert [d["id"] for d in page2["data"]] == ids[::-1][2:] and page2["has_more"] is False
    aligned = client.get("/v1/datasets", params={"purpose": "alignment"}).json()["data"]
    assert sorted(d["id"] for d in aligned) == sorted(ids[:3])


def test_same_bytes_twice_share_one_blob_and_survive_one_delete(client) -> None:
    a = upload(client, DEMO / "customer_benign_lists.jsonl").json()
    b = upload(client, DEMO / "customer_benign_lists.jsonl").json()
    assert a["sha256"] == b["sha256"] and a["id"] != b["id"]
    assert client.delete(f"/v1/datasets/{a['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{b['id']}/preview").status_code == 200


def test_invalid_dataset_is_422_with_located_errors_and_nothing_kept(client, settings) -> None:
    bad = b'{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n{oops\n'
    r = upload(client, "x.jsonl", content=bad)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "missing_field" and err["param"] == "file"
    assert [(e["line"], e["code"]) for e in err["details"]["errors"]] == [
        (2, "missing_field"),
        (3, "invalid_json"),
    ]
    assert err["details"]["error_count"] == 2
    assert client.get("/v1/datasets").json()["data"] == []
    assert stored_blobs(settings) == []


def test_upload_with_forced_format_and_csv(client) -> None:
    r = upload(client, "x.csv", content=b"prompt,completion\nhi,there\n")
    assert r.status_code == 201 and r.json()["container"] == "csv"
    r = upload(client, "x.jsonl", content=b'{"prompt": "a", "completion": "b"}\n', format="alpaca")
    assert r.status_code == 422 and r.json()["error"]["code"] == "missing_field"


def test_invalid_form_values_are_422(client) -> None:
    r = upload(client, DEMO / "alignment.jsonl", purpose="banana")
    assert r.status_code == 422 and r.json()["error"]["param"] == "purpose"
    r = client.post("/v1/datasets", data={"purpose": "fine-tune"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_path_tricks_in_the_file_name_are_neutralised(client) -> None:
    r = upload(
        client, "x", name="../../etc/passwd\x00.jsonl", content=b'{"prompt": "a", "completion": "b"}\n'
    )
    assert r.status_code == 201
    assert "/" not in r.json()["filename"] and ".." not in r.json()["filename"]


def test_declared_body_over_the_limit_is_413(client, settings) -> None:
    r = client.post(
        "/v1/datasets",
        content=b"x",
        headers={
            "content-length": str(settings.max_upload_bytes + (2 << 20)),
            "content-type": "application/json",
        },
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"


def test_not_found_routes(client) -> None:
    for path in ("/v1/datasets/ds_nope", "/v1/datasets/ds_nope/preview"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.delete("/v1/datasets/ds_nope").status_code == 404


def test_json_array_upload(client) -> None:
    rows = [{"instruction": "Say hi", "output": "hi"}, {"instruction": "Say bye", "output": "bye"}]
    r = upload(client, "x.json", content=json.dumps(rows).encode())
    assert r.status_code == 201 and (r.json()["container"], r.json()["format"]) == ("json", "alpaca")
