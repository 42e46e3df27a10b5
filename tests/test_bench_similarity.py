"""bench/similarity.py runs end to end on a small input and its methods agree (the timing is not checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

ROOT = Path(__file__).resolve().parents[1]


ROW = re.compile(r"^(ours|ours-fp32|st|faiss)\s+(?:both|C->A)\s+[\d.]+\s+-?\d+\s+\d+\s+([\d.]+)$", re.M)


def test_similarity_bench_runs_and_methods_agree() -> None:
    bench = ROOT / "bench" / "similarity.py"
    cmd = [sys.executable, str(bench), "--n", "600", "--dim", "32", "--threads", "1", "--screen", "on"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True, cwd=ROOT).stdout
    rows = dict(ROW.findall(out))
    assert set(rows) == {"ours", "ours-fp32", "st", "faiss"}, out
    assert all(float(agree) == 1.0 for agree in rows.values()), out
    assert re.search(r"ours / fastest one-direction baseline = [\d.]+ \(target <= 1.0\)", out), out
    assert "ours: bf16 screen, fp32 re-score, fp32 fallback {" in out and "ours-fp32 / ours = " in out
