"""SIGKILL the object store in the middle of an upload's multipart transfer: the upload answers 503 with the
error envelope, nothing half-written is left (no object, no multipart upload, no dataset row, no staged
file), and once the store is back the same upload succeeds. A private SeaweedFS server, never CI's."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.models import Dataset
from tests.chaos.conftest import wait_for
from tests.conftest import bearer, make_key
from tests.storage.weed import BUCKET, WeedServer, require_weed

pytestmark = pytest.mark.chaos
PART = 5 << 20


def _big(path: Path, mb: int) -> bytes:
    row = json.dumps({"prompt": "What is the boiling point of water? " * 4, "completion": "100 C. " * 20})
    data = ((row + "\n") * ((mb << 20) // (len(row) + 1))).encode()
    path.write_bytes(data)
    return data


def test_killing_the_object_store_mid_upload_answers_503_and_a_retry_works(
    settings, redis_url, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.main import create_app

    weed = WeedServer(tmp_path / "weed", require_weed())
    weed.start()
    try:
        s = settings.model_copy(
            update={
                **weed.settings_update("chaos"),
                "blob_part_size_bytes": PART,
                "blob_max_attempts": 2,
                "blob_timeout_s": 3.0,
            }
        )
        s3 = weed.client(attempts=1)
        data = _big(tmp_path / "big.jsonl", 60)
        s3.create_bucket(Bucket=BUCKET)

        def pending() -> list[str]:
            got = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="chaos/")
            return [u["Key"] for u in got.get("Uploads", [])]

        def objects() -> list[str]:
            got = s3.list_objects_v2(Bucket=BUCKET, Prefix="chaos/datasets/")
            return [o["Key"] for o in got.get("Contents", [])]

        with TestClient(create_app(s, redis_url=redis_url)) as c:
            c.headers.update(bearer(make_key(c.app.state.ftguard.services.db, "test")))
            result: dict[str, object] = {}

            def send() -> None:
                result["response"] = c.post("/v1/datasets", files={"file": ("big.jsonl", data)})

            sender = threading.Thread(target=send)
            sender.start()
            # the body is validated and staged, the parts are going up: kill the store now
            wait_for("the multipart upload to start", pending, timeout=180, every=0.02)
            weed.kill()
            sender.join(timeout=120)
            r = result["response"]
            assert r.status_code == 503, r.text  # type: ignore[attr-defined]
            err = r.json()["error"]  # type: ignore[attr-defined]
            assert err["type"] == "service_unavailable_error" and err["code"] == "blob_store_unavailable"
            assert "retry" in err["message"]
            with c.app.state.ftguard.services.db.session() as session:
                assert session.scalar(select(func.count()).select_from(Dataset)) == 0
            assert list((s.blob_dir / "tmp").iterdir()) == []  # the staged copy is gone too

            t = time.monotonic()
            weed.start()
            print(f"store restarted in {time.monotonic() - t:.1f} s")
            s3 = weed.client(attempts=1)
            assert objects() == []  # the object never became visible
            left = pending()  # the killed transfer, if the store kept it: its abort could not reach it

            r = c.post("/v1/datasets", files={"file": ("big.jsonl", data)})  # the client retries
            assert r.status_code == 201, r.text
            ds = r.json()
            assert ds["bytes"] == len(data)
            assert pending() == []  # the retry aborted what the failure left (left: {left})
            assert len(objects()) == 1
            head = s3.head_object(Bucket=BUCKET, Key=objects()[0])
            assert head["ContentLength"] == len(data)
            with c.app.state.ftguard.services.db.session() as session:
                assert session.scalar(select(func.count()).select_from(Dataset)) == 1
            p = c.get(f"/v1/datasets/{ds['id']}/preview")
            assert p.status_code == 200 and len(p.json()["data"]) == 5
            print(f"multipart uploads left by the kill, aborted by the retry: {len(left)}")
    finally:
        weed.stop()
