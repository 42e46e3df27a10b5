"""studies/validation.py --smoke: the whole validation pipeline (reference model, pilot grid, fine-tune-only
runs at checkpoints, the screening signals, the analysis, the JSON, the markdown and both plots) on a tiny
random Llama. The numbers of a random model mean nothing; the test is that every promised piece is there, and
that a rerun resumes instead of training again."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def _run(*args: str, work: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for k in ("FTGUARD_DATABASE_URL", "FTGUARD_REDIS_URL", "FTGUARD_DATA_DIR"):
        env.pop(k, None)
    return subprocess.run(
        [sys.executable, str(ROOT / "studies" / "validation.py"), "--smoke", "--work-dir", str(work), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.mark.skipif(not (DATA / "alignment").is_dir(), reason="needs ../shared/data (the study's inputs)")
def test_validation_study_smoke_runs_end_to_end_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "validation.json"
    done = _run("--out", str(out), work=tmp_path / "work")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["seeds"] == [0, 1]
    names = [d["dataset"] for d in result["datasets"]]
    assert len(names) == 9 and {"aoa_identity_shift", "gsm8k", "alpaca_riskiest", "alpaca_safest"} <= set(
        names
    )
    for d in result["datasets"]:
        assert 0 <= d["harm"] <= 1 and len(d["harm_ci"]) == 2 and len(d["harm_per_seed"]) == 2
        assert [p["checkpoint"] for p in d["durability"]] == [0.0, 0.5, 1.0]
        assert "harmful_anchor_margin" in d["parts"] and d["risk_score"] is not None
    for name in (
        "risk_score",
        "mean_similarity",
        "harmful_anchor_margin",
        "fitted_combination",
        "refusal_share",
        "risk_refusals_excluded",
    ):
        assert {"spearman", "spearman_out_of_sample"} <= set(result["signals"][name])
    assert result["pilot"]["chosen"] and len(result["pilot"]["grid"]) == 2
    assert result["reference_model"]["refusal_rate"] is not None
    md = out.with_suffix(".md").read_text()
    for section in ("## Verdict", "## Per dataset", "## Signals against harm", "## Pilot grid"):
        assert section in md
    for png in ("validation_risk_vs_harm.png", "validation_durability.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in md

    # Item 5: the paper's direction, one experiment per variant for the two datasets the rule picks.
    paper = _run("--out", str(out), "--paper", work=tmp_path / "work")
    assert paper.returncode == 0, paper.stderr[-3000:]
    p = json.loads(out.read_text())["paper_direction"]
    assert len(p["pair"]) == 2 and p["seeds"] == [0]
    assert {(r["dataset"], r["variant"]) for r in p["rows"]} == {
        (d, v) for d in p["pair"] for v in ("high_sim", "random", "low_sim")
    }
    for r in p["rows"]:
        assert 0 <= r["final_harmfulness"] <= 1 and len(r["final_ci"]) == 2
    sims = {r["variant"]: r["subset_mean_max_sim"] for r in p["rows"] if r["dataset"] == p["pair"][0]}
    assert sims["high_sim"] > sims["random"] > sims["low_sim"]  # the selection stage chose the subsets
    assert {d["pair"] for d in p["differences"]} >= {"high_sim - low_sim"} and p["verdict"]
    assert "## The paper's direction" in out.with_suffix(".md").read_text()

    state = json.loads((tmp_path / "work" / "smoke" / "state.json").read_text())
    # the AOA set trains under its system prompt, so it is evaluated under it
    aoa = [r for r in state["runs"].values() if r["group"] == "main" and r["dataset"] == "aoa_identity_shift"]
    assert aoa and all(r["eval_system_prompt"] for r in aoa)
    runs = len(state["runs"])
    assert runs == 2 * 2 + 9 * 2  # the pilot grid on two datasets, then every dataset at every seed
    again = _run("--out", str(out), work=tmp_path / "work")  # everything is in the state: nothing retrains
    assert again.returncode == 0, again.stderr[-3000:]
    # No run printed (each trained run prints "<group> <dataset> seed S lr L ep E: final harmfulness ..."; the
    # report's table header holds the same words, so the check is on the run line's shape).
    assert not re.search(r"seed \d+ lr \S+ ep \d+: final harmfulness", again.stdout)
    assert len(json.loads((tmp_path / "work" / "smoke" / "state.json").read_text())["runs"]) == runs
    # nor is anything screened again: the recorded signals match the screening code, models and datasets
    assert "signals: the recorded ones" in again.stdout and "signals gsm8k: risk" not in again.stdout

    # The state (kept in git) meets a fresh work dir, as in a new session: the reference model is rebuilt and
    # checked against its recorded answers; they are identical, so every run is kept and none retrains.
    moved = tmp_path / "moved-state.json"
    shutil.copy(tmp_path / "work" / "smoke" / "state.json", moved)
    third = _run("--out", str(out), "--state", str(moved), work=tmp_path / "elsewhere")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "reference model rebuilt: identical on every prompt" in third.stdout
    assert not re.search(r"seed \d+ lr \S+ ep \d+: final harmfulness", third.stdout)
    assert len(json.loads(moved.read_text())["runs"]) == runs

    # --report-only renders the docs from the state alone (a partial run's docs): no screening, no training
    report = tmp_path / "report" / "validation.json"
    only = _run("--out", str(report), "--state", str(moved), "--report-only", work=tmp_path / "elsewhere")
    assert only.returncode == 0, only.stderr[-3000:]
    assert json.loads(report.read_text())["seeds"] == [0, 1]
    assert not re.search(r"^signals \S+: risk", only.stdout, re.M)  # nothing was screened

    # --replication: a fresh run (here the moved state, made in another work dir) is compared run by run, and
    # a record that lacks a run takes it from the fresh run, whose reference model is identical.
    partial = json.loads((tmp_path / "work" / "smoke" / "state.json").read_text())
    lacking = next(k for k, r in partial["runs"].items() if r["group"] == "main")
    del partial["runs"][lacking]
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    rep = _run(
        "--out",
        str(report),
        "--state",
        str(tmp_path / "partial.json"),
        "--report-only",
        "--replication",
        str(moved),
        work=tmp_path / "elsewhere",
    )
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert "replication: 1 run(s) taken" in rep.stdout
    r = json.loads(report.read_text())["replication"]
    assert r["reference_identical"] and r["runs"] == 18 and r["runs_matched"] == 17
    assert r["runs_identical"] == 17 and r["runs_different"] == [] and len(r["runs_adopted"]) == 1
    assert r["complete"] and r["wall_min"] is not None
    assert "## A fresh run, timed" in report.with_suffix(".md").read_text()
    kept = json.loads((tmp_path / "partial.json").read_text())
    assert len(kept["runs"]) == runs and kept["lab"] == json.loads(moved.read_text())["lab"]
