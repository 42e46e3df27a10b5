"""Peak memory of validating big files: a 1 GiB Parquet file and a gzip JSONL that decompresses to 1 GiB.

Generates both in a temporary directory, validates each in a fresh child process (the way an upload is
validated, through `validate_stream`), and prints the child's peak RSS growth over its baseline (measured
after every import). The goal is under 150 MB for each: Parquet is held one row group at a time, gzip one
record at a time. The files are deleted afterwards.

    python bench/formats_memory.py [--gib 1.0] [--row-group-mib 64]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GOAL_MB = 150


def record(i: int) -> dict[str, object]:
    """About 1 KB of chat with hex text (it does not compress, so the file size is the data size)."""
    return {
        "messages": [
            {"role": "system", "content": f"You are assistant number {i % 97}."},
            {"role": "user", "content": f"Question {i}: " + os.urandom(200).hex()},
            {"role": "assistant", "content": f"Answer {i}: " + os.urandom(250).hex(), "weight": 1},
        ]
    }


def write_parquet(path: Path, target: int, row_group_bytes: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows_per_group = max(1, row_group_bytes // 1000)
    n = 0
    writer = None
    try:
        while not path.exists() or path.stat().st_size < target:  # row groups reach the file as written
            table = pa.Table.from_pylist([record(n + j) for j in range(rows_per_group)])
            if writer is None:
                writer = pq.ParquetWriter(str(path), table.schema, compression="snappy")
            writer.write_table(table, row_group_size=rows_per_group)
            n += rows_per_group
    finally:
        if writer is not None:
            writer.close()
    return n


def write_gzip(path: Path, target: int) -> tuple[int, int]:
    n = raw = 0
    with gzip.open(path, "wb", compresslevel=1) as g:
        while raw < target:
            lines = b"".join(json.dumps(record(n + j)).encode() + b"\n" for j in range(1000))
            g.write(lines)
            raw += len(lines)
            n += 1000
    return n, raw


def child(path: str) -> None:
    """Validate one file and print JSON: examples, errors, seconds, baseline and peak RSS (MB)."""
    import psutil
    import pyarrow.parquet  # noqa: F401  (imported before the baseline, as a worker has it)

    from app.datasets.validate import Limits, validate_stream

    limits = Limits(max_bytes=4 << 30, max_examples=50_000_000, max_line_bytes=1 << 20, max_errors=5)
    proc = psutil.Process()
    base = proc.memory_info().rss
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    peak = [base]
    done = threading.Event()

    def sample() -> None:  # the peak during validation (ru_maxrss also holds the imports' transient peak)
        while not done.wait(0.02):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with open(path, "rb") as fh:
        rep = validate_stream(fh, limits=limits, filename=Path(path).name)
    secs = time.perf_counter() - t0
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {
        "maxrss_before_mb": round(before / 1e6, 1),
        "maxrss_after_mb": round(after / 1e6, 1),
        "container": rep.container,
        "examples": rep.examples,
        "errors": rep.errors,
        "seconds": round(secs, 1),
        "baseline_mb": round(base / 1e6, 1),
        "growth_mb": round((max(peak[0], after if after > before else 0) - base) / 1e6, 1),
    }
    print(json.dumps(out))


def run_child(path: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, env=env, check=True
    )
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def bench_parquet(tmp: Path, target: int, row_group_mib: int) -> bool:
    path = tmp / "big.parquet"
    rows = write_parquet(path, target, row_group_mib << 20)
    size = path.stat().st_size
    r = run_child(path)
    path.unlink()
    print(
        f"parquet: {size / (1 << 30):.2f} GiB file, {rows} rows in row groups of ~{row_group_mib} MiB -> "
        f"{r['examples']} examples in {r['seconds']} s, peak RSS growth {r['growth_mb']} MB "
        f"(baseline {r['baseline_mb']} MB), errors {r['errors']}"
    )
    return float(r["growth_mb"]) < GOAL_MB and not r["errors"]  # type: ignore[arg-type]


def bench_gzip(tmp: Path, target: int) -> bool:
    path = tmp / "big.jsonl.gz"
    n, raw = write_gzip(path, target)
    size = path.stat().st_size
    r = run_child(path)
    path.unlink()
    print(
        f"jsonl.gz: {size / (1 << 30):.2f} GiB file, {raw / (1 << 30):.2f} GiB decompressed, {n} lines -> "
        f"{r['examples']} examples in {r['seconds']} s, peak RSS growth {r['growth_mb']} MB "
        f"(baseline {r['baseline_mb']} MB), errors {r['errors']}"
    )
    return float(r["growth_mb"]) < GOAL_MB and not r["errors"]  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--row-group-mib", type=int, default=64)
    ap.add_argument("--only", choices=["parquet", "gzip"], help="Run one of the two.")
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    target = int(args.gib * (1 << 30))
    tmp = Path(tempfile.mkdtemp(prefix="ftguard-formats-"))
    ok = True
    try:
        if args.only in (None, "parquet"):
            ok &= bench_parquet(tmp, target, args.row_group_mib)
        if args.only in (None, "gzip"):
            ok &= bench_gzip(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"goal: peak RSS growth under {GOAL_MB} MB for each -> {'ok' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
