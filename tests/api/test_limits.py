"""Limits: upload size, examples, line length, JSON body size, request rate, active screenings per tenant."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.api.test_errors import assert_envelope
from tests.conftest import DEMO, bearer, make_key, upload


@pytest.fixture
def make_client(settings: Settings, redis_url: str) -> Iterator[Any]:
    """Clients of apps built with some settings changed; apps made from one call share Redis and SQL, like
    API replicas."""
    stack = ExitStack()

    def make(tenant: str = "test", **overrides: Any) -> TestClient:
        s = settings.model_copy(update=overrides)
        c = stack.enter_context(TestClient(create_app(s, redis_url=redis_url)))
        c.headers.update(bearer(make_key(c.app.state.ftguard.services.db, tenant)))
        return c

    yield make
    stack.close()


ROW = b'{"prompt": "What is two plus two?", "completion": "Four."}\n'


def test_upload_bytes_examples_and_line_length_limits_are_settings(make_client) -> None:
    c = make_client(max_upload_bytes=1000, max_examples=5, max_line_bytes=200)
    r = upload(c, "x.jsonl", content=ROW * 30)  # 1.7 KB: over max_upload_bytes
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    r = upload(c, "x.jsonl", content=ROW * 6)
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_examples"
    assert r.json()["error"]["details"]["errors"][0]["line"] == 6
    long = b'{"prompt": "' + b"a" * 300 + b'", "completion": "b"}\n'
    r = upload(c, "x.jsonl", content=ROW + long)
    assert r.status_code == 422 and r.json()["error"]["code"] == "line_too_long"
    assert r.json()["error"]["details"]["errors"][0]["line"] == 2
    assert upload(c, "x.jsonl", content=ROW * 5).status_code == 201


def test_json_body_limit_declared_and_streamed(make_client) -> None:
    c = make_client(max_json_body_bytes=2048)
    big = b'{"dataset_id": "' + b"x" * 4000 + b'"}'
    r = c.post("/v1/screenings", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert_envelope(r.json(), "request_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    r = c.post("/v1/screenings", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert_envelope(r.json(), "request_too_large")
    # the upload route has its own, larger limit
    assert upload(c, "x.jsonl", content=ROW * 100).status_code == 201


def test_rate_limit_is_per_tenant_shared_by_replicas_and_says_when_to_retry(make_client) -> None:
    a1 = make_client(rate_limit_per_s=1.0, rate_limit_burst=3)
    a2 = make_client(rate_limit_per_s=1.0, rate_limit_burst=3)  # a second replica, same Redis
    a2.headers.update(a1.headers)
    other = make_client("other", rate_limit_per_s=1.0, rate_limit_burst=3)
    codes = [c.get("/v1/datasets").status_code for c in (a1, a2, a1, a2)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    r = a1.get("/v1/datasets")
    assert r.status_code == 429
    assert_envelope(r.json(), "rate_limited")
    assert r.json()["error"]["type"] == "rate_limit_error"
    wait = int(r.headers["retry-after"])
    assert 1 <= wait <= 2
    assert other.get("/v1/datasets").status_code == 200  # another tenant has its own bucket
    assert a1.get("/healthz").status_code == 200  # health is not limited
    time.sleep(wait + 0.1)
    assert a1.get("/v1/datasets").status_code == 200


def test_active_screenings_per_tenant_are_capped(make_client) -> None:
    c = make_client(max_active_screenings=2)
    cust = upload(c, DEMO / "customer_benign_lists.jsonl").json()["id"]
    align = upload(c, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    body = {"dataset_id": cust, "alignment_dataset_id": align}
    ids = [c.post("/v1/screenings", json=body).json()["id"] for _ in range(2)]
    r = c.post("/v1/screenings", json=body)
    assert r.status_code == 429 and r.headers["retry-after"]
    assert_envelope(r.json(), "too_many_active_screenings")
    assert len(c.get("/v1/screenings").json()["data"]) == 2  # nothing was created
    c.post(f"/v1/screenings/{ids[0]}/cancel")
    assert c.post("/v1/screenings", json=body).status_code == 201
