from __future__ import annotations


def assert_envelope(body: dict, code: str) -> None:
    assert set(body) == {"error"}
    assert {"message", "type", "param", "code"} <= set(body["error"])
    assert body["error"]["code"] == code


def test_404_405_422_use_the_envelope(client) -> None:
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert_envelope(r.json(), "not_found")
    r = client.put("/v1/datasets")
    assert r.status_code == 405
    assert_envelope(r.json(), "method_not_allowed")
    r = client.post("/v1/screenings", json={"dataset_id": 3})
    assert r.status_code == 422
    assert_envelope(r.json(), "validation_error")
    r = client.post("/v1/screenings", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert_envelope(r.json(), "validation_error")


def test_health_and_readiness(client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "queue": "ok"}


def test_openapi_documents_every_route_with_examples(client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for p in (
        "/v1/datasets",
        "/v1/datasets/{dataset_id}",
        "/v1/screenings",
        "/v1/screenings/{screening_id}",
        "/v1/screenings/{screening_id}/report",
        "/v1/screenings/{screening_id}/scores",
        "/v1/screenings/{screening_id}/subsets/{subset}",
        "/v1/screenings/{screening_id}/events",
        "/healthz",
        "/readyz",
    ):
        assert p in paths, p
    schemas = spec["components"]["schemas"]
    for name in ("DatasetPublic", "ScreeningCreate", "ScreeningPublic"):
        assert schemas[name].get("examples"), name


def test_body_errors_say_where_and_what_to_do_in_plain_words(client) -> None:
    body = b'{\n  "dataset_id": "ds_1",\n  "alignment_dataset_id" "ds_2"\n}'
    r = client.post("/v1/screenings", content=body, headers={"content-type": "application/json"})
    err = r.json()["error"]
    assert r.status_code == 422 and err["param"] is None  # not the character offset as a "field"
    assert err["message"].startswith("the request body is not valid JSON")
    assert "line 3, column" in err["message"] and "JSON decode error" not in err["message"]
    # no content type: the body is not read as JSON, and the error says to send one
    r = client.post("/v1/screenings", content=b'{"dataset_id": "ds_1"}', headers={"content-type": ""})
    err = r.json()["error"]
    assert r.status_code == 422 and "Content-Type: application/json" in err["message"]
    assert "valid dictionary" not in err["message"]
    # a field error names the field
    r = client.post("/v1/screenings", json={"dataset_id": 3, "alignment_dataset_id": "ds_2"})
    err = r.json()["error"]
    assert err["param"] == "dataset_id" and "field 'dataset_id'" in err["message"]
