"""Metrics and logs: /metrics after a screening run by a real worker; request and job ids in JSON logs; no
dataset text in any log line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core import logs
from tests.conftest import DEMO, upload

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_move_after_a_screening(client, run_worker) -> None:
    before = scrape(client)
    cust = upload(client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
    other = upload(client, DEMO / "customer_benign_general.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    scr = client.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}).json()
    queued = scrape(client)
    assert value(queued, "ftguard_queue_depth", queue="default") == 1
    assert value(queued, "ftguard_screenings", status="queued") == 1
    assert value(queued, "ftguard_redis_up") == 1 and value(queued, "ftguard_database_up") == 1

    run_worker()
    client.get(f"/v1/screenings/{scr['id']}")
    after = scrape(client)
    assert value(after, "ftguard_queue_depth", queue="default") == 0
    assert value(after, "ftguard_screenings", status="succeeded") == 1
    done = "ftguard_jobs_total"
    assert (
        value(after, done, kind="screening", status="succeeded")
        - value(before, done, kind="screening", status="succeeded")
        == 1
    )
    for stage in ("load", "represent_alignment", "represent_customer", "compare", "save", "total"):
        n = value(after, "ftguard_job_duration_seconds_count", kind="screening", stage=stage)
        assert n == 1, stage
    assert value(after, "ftguard_job_duration_seconds_sum", kind="screening", stage="total") > 0
    assert value(after, "ftguard_vectors_total", source="computed") == 62 + 100
    assert value(after, "ftguard_vectors_total", source="cache") == 0
    assert value(after, "ftguard_vector_cache_lookups_total", result="miss") == 2

    # requests are counted by route template, never by raw path: no ids in labels
    assert (
        value(after, "ftguard_http_requests_total", method="POST", route="/v1/screenings", status="201") == 1
    )
    assert value(after, "ftguard_http_requests_total", method="POST", route="/v1/datasets", status="201") == 3
    tmpl = "/v1/screenings/{screening_id}"
    assert value(after, "ftguard_http_request_duration_seconds_count", method="GET", route=tmpl) == 1
    assert not [k for k in after if any(v.startswith(("scr_", "ds_")) for _, v in k[1])]

    # a second screening against the same alignment set reads its vectors from the cache
    client.post("/v1/screenings", json={"dataset_id": other, "alignment_dataset_id": align})
    run_worker()
    again = scrape(client)
    assert value(again, "ftguard_vectors_total", source="cache") == 100
    assert value(again, "ftguard_vectors_total", source="computed") == 162 + 61
    assert value(again, "ftguard_vector_cache_lookups_total", result="hit") == 1
    assert value(again, "ftguard_job_duration_seconds_count", kind="screening", stage="total") == 2


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every log record, at DEBUG, through the JSON formatter into a buffer."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield buf
    root.removeHandler(handler)
    root.setLevel(old)


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_request_log_line_carries_the_request_id(client, json_logs) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": "req-abc.123"})
    assert r.headers["x-request-id"] == "req-abc.123"
    r = client.get("/v1/screenings/scr_nope", headers={"X-Request-ID": "bad id\twith tab"})
    generated = r.headers["x-request-id"]
    assert r.status_code == 404 and len(generated) == 32 and generated != "bad id\twith tab"
    assert client.get("/healthz").headers["x-request-id"] != generated
    access = [line for line in lines(json_logs) if line["logger"] == "ftguard.access"]
    first, second = access[0], access[1]
    assert first["request_id"] == "req-abc.123" and first["route"] == "/healthz" and first["status"] == 200
    assert first["message"] == "request" and first["level"] == "info" and "duration_ms" in first
    assert second["request_id"] == generated and second["route"] == "/v1/screenings/{screening_id}"
    assert second["status"] == 404


def test_no_dataset_text_in_logs_during_upload_and_screening(client, run_worker, json_logs) -> None:
    canary = "zqxcanary"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"{canary}{i} please list the steps for project {i}"},
                {"role": "assistant", "content": f"Step one {canary}{i}. Step two. Step three."},
            ]
        }
        for i in range(20)
    ]
    body = "\n".join(json.dumps(r) for r in rows).encode()
    cust = upload(client, "c.jsonl", content=body).json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    bad = upload(
        client,
        "bad.jsonl",
        content=body + b'\n{"messages": [{"role": "user", "content": "' + canary.encode() + b'"}]}\n',
    )
    assert bad.status_code == 422
    scr = client.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}).json()
    run_worker()
    assert client.get(f"/v1/screenings/{scr['id']}").json()["status"] == "succeeded"
    assert client.get(f"/dashboard/screenings/{scr['id']}").status_code == 200

    text = json_logs.getvalue()
    assert text and canary not in text
    records = lines(json_logs)
    done = [r for r in records if r["message"] == "screening succeeded"]
    assert done and done[0]["job_id"] == f"run_screening-{scr['id']}"
    assert done[0]["screening_id"] == scr["id"] and done[0]["customer_examples"] == 20
    # every record logged while the job ran carries its id; none after it does
    assert all(r.get("job_id") for r in records if r["logger"].startswith("ftguard.worker"))


def test_text_logs_carry_the_access_fields_and_the_migration_log_reads_forward() -> None:
    import app.core.db  # noqa: F401 (installs the migration-log filter)

    rec = logging.LogRecord("ftguard.access", logging.INFO, __file__, 1, "request", (), None)
    for k, v in {
        "method": "GET",
        "route": "/v1/screenings/{screening_id}",
        "status": 200,
        "duration_ms": 3.2,
    }.items():
        setattr(rec, k, v)
    logs.ContextFilter().filter(rec)
    line = logs.TextFormatter().format(rec)
    assert "method=GET" in line and "route=/v1/screenings/{screening_id}" in line
    assert "status=200" in line and "duration_ms=3.2" in line
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    mig = logging.getLogger("alembic.runtime.migration")
    mig.addHandler(handler)
    old = mig.level
    mig.setLevel(logging.INFO)
    try:
        mig.info("Running upgrade %s -> %s, %s", "0004", "0003", "experiments and calibration")
    finally:
        mig.removeHandler(handler)
        mig.setLevel(old)
    assert (
        buf.getvalue().strip()
        == "applying schema migration 0003 (experiments and calibration), which follows 0004"
    )
