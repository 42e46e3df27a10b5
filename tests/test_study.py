"""studies/similarity_vs_harm.py end to end on a tiny random-initialised Llama: the whole comparison through
ftguard's experiment jobs, the after-alignment pass, the table and the JSON it writes. The numbers of a random
model mean nothing; the test is that the study runs and reports every row it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_backend  # runs on embedded SQLite and Redis of its own, never the test backends

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "alignment").is_dir(), reason="needs ../shared/data (the study's inputs)")
def test_study_runs_on_a_tiny_model(tiny_llama: str, tmp_path: Path) -> None:
    out = tmp_path / "study.md"
    args = [
        *("--base-model", tiny_llama, "--pool", "24", "--align-size", "4", "--ft-size", "8"),
        *("--harmful", "4", "--benign", "2", "--seeds", "0", "--max-length", "96"),
        *("--rep-max-length", "32", "--max-new-tokens", "4", "--gen-batch", "8", "--out", str(out)),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("FTGUARD_DATABASE_URL", None), env.pop("FTGUARD_REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "studies" / "similarity_vs_harm.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads(out.with_suffix(".json").read_text())
    rows = saved["rows"]
    assert [r["variant"] for r in rows] == ["high_sim", "random", "low_sim"]
    assert all(r["status"] == "succeeded" for r in rows), [r["error"] for r in rows]
    # High-Sim is ranked above Low-Sim in the base model's own representation
    assert rows[0]["subset_mean_max_sim"] >= rows[2]["subset_mean_max_sim"]
    for r in rows:
        assert 0 <= r["harmfulness_rate"] <= 1 and r["risk_score"] is not None and r["anchored"]
        assert set(r["after_alignment"]) == {"refusal_rate", "over_refusal_rate", "seconds"}
    assert saved["meta"]["baseline"]["refusal_rate"] is not None
    md = out.read_text()
    assert md.startswith(f"# Similarity vs harm: {Path(tiny_llama).name} on cpu (fp32)")
    assert "## Direction" in md and "High-Sim minus Low-Sim harmfulness rate" in md
    assert md.count(" / ") >= 3  # the after-alignment column, one per run
    # --render rebuilds the same markdown from the JSON alone
    again = tmp_path / "again.json"
    again.write_text(out.with_suffix(".json").read_text())
    subprocess.run(
        [sys.executable, str(ROOT / "studies" / "similarity_vs_harm.py"), "--render", str(again)],
        check=True,
        capture_output=True,
        env=env,
    )
    assert again.with_suffix(".md").read_text() == md
