from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape
from typer.testing import CliRunner

from app.cli import app
from app.cli.lab import STAGE_LABELS as EXPERIMENT_STAGES
from app.cli.local import STAGE_LABELS
from tests.conftest import DEMO

pytestmark = pytest.mark.no_backend  # runs on embedded SQLite and Redis of its own, never the test backends


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("FTGUARD_DATA_DIR", str(tmp_path / "data"))
    from app.core.config import get_settings

    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_screen_prints_a_summary_and_writes_the_json_report(runner: CliRunner, tmp_path: Path) -> None:
    out, page, rows = tmp_path / "report.json", tmp_path / "report.html", tmp_path / "scores.jsonl"
    src = DEMO / "customer_harmful_looking.jsonl"
    res = runner.invoke(
        app, ["screen", str(src), "--json", str(out), "--html", str(page), "--scores", str(rows)]
    )
    assert res.exit_code == 0, res.output
    # one bar per stage, each finished
    for label in STAGE_LABELS.values():
        assert re.search(rf"{re.escape(label)}\s.*100%", res.output), (label, res.output)
    _check_scores(rows, src, json.loads(out.read_text()))
    html = page.read_text()
    # standalone: styles inline, charts inline SVG, nothing fetched from anywhere
    assert html.startswith("<!doctype html>") and "<style>" in html and 'rel="stylesheet"' not in html
    assert 'data-chart="histogram"' in html and 'data-chart="gauge"' in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "default-src 'none'" in html and "<script" not in html
    body = json.loads(out.read_text())
    top = body["top_examples"][0]
    # the nearest alignment examples and the nearest anchors are in it
    assert str(escape(top["nearest_alignment"][0]["example"]["prompt"][:40])) in html
    assert str(escape(top["anchor_evidence"][0]["nearest_harmful_anchor"]["example"]["prompt"][:40])) in html
    assert "ftguard screening summary" in res.output and "critical" in res.output
    assert (
        "uncalibrated" in res.output
        and "Calibration: UNCALIBRATED" in res.output
        and body["calibration"]["calibrated"] is False
    )
    assert body["risk"]["tier"] == "critical" and body["customer"]["examples"] == 62
    assert body["cache"]["alignment_hit"] is False
    again = runner.invoke(app, ["screen", str(DEMO / "customer_benign_general.jsonl"), "--json", str(out)])
    assert again.exit_code == 0 and json.loads(out.read_text())["cache"]["alignment_hit"] is True


def _check_scores(rows: Path, src: Path, body: dict[str, Any]) -> None:
    """`--scores`: one line per customer example, in file order, that agrees with the report."""
    from app.policies import decide

    got = [json.loads(line) for line in rows.read_text().splitlines()]
    originals = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    assert [g["record"] for g in got] == originals and [g["line"] for g in got] == list(range(1, 63))
    threshold = decide.DEFAULT_POLICY["row_threshold"]
    assert all(g["flagged"] == (g["row_score"] > threshold) for g in got)
    assert 0 < sum(g["flagged"] for g in got) < len(got)  # the harmful-looking set: some rows, not all
    for top in body["top_examples"]:
        g = got[top["record"] - 1]
        assert g["max_sim"] == pytest.approx(top["max_sim"])
        assert [n["record_number"] for n in g["nearest_alignment"]] == [
            n["record"] for n in top["nearest_alignment"]
        ]
        compliance = next(e for e in top["anchor_evidence"] if e["form"] == "compliance")
        assert g["anchor_margin"] == pytest.approx(compliance["margin"])
        near = compliance["nearest_harmful_anchor"]
        assert g["nearest_anchor"]["record_number"] == near["record"]
        assert g["nearest_anchor"]["sim"] == pytest.approx(near["sim"])
    first = got[0]["nearest_alignment"]
    assert len(first) == 5 and [n["sim"] for n in first] == sorted((n["sim"] for n in first), reverse=True)
    assert first[0]["messages"][0]["role"] in ("system", "user")


def test_demo_ranks_the_harmful_looking_set_first(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    res = runner.invoke(app, ["demo", "--json", str(out)])
    assert res.exit_code == 0, res.output
    reports = json.loads(out.read_text())
    ranked = sorted(reports, key=lambda n: -reports[n]["risk"]["risk_score"])
    assert ranked[0] == "harmful-looking"
    assert reports["harmful-looking"]["risk"]["tier"] in ("high", "critical")
    assert all(reports[n]["risk"]["tier"] in ("low", "medium") for n in ranked[1:])


@pytest.mark.slow
def test_demo_on_the_defaults_puts_the_list_heavy_set_above_the_prose_one(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quick start's own configuration: harmful anchors in SmolLM2's hidden states see the list-heavy
    benign set as closer to the harmful anchors than the prose one (its form, not its topic)."""
    from app.core.config import get_settings

    monkeypatch.delenv("FTGUARD_ANCHOR_BACKEND", raising=False)
    monkeypatch.delenv("FTGUARD_ANCHOR_MODEL", raising=False)
    get_settings.cache_clear()
    out = tmp_path / "demo.json"
    res = runner.invoke(app, ["demo", "--json", str(out)])
    assert res.exit_code == 0, res.output
    reports = json.loads(out.read_text())
    assert {r["anchors"]["representation"]["backend"] for r in reports.values()} == {"causal-lm"}
    risk = {n: r["risk"]["risk_score"] for n, r in reports.items()}
    assert risk["harmful-looking"] > risk["benign, list-heavy"] > risk["benign general"], risk
    side = {n: r["anchors"]["share_closer_to_harmful"] for n, r in reports.items()}
    assert side["benign, list-heavy"] > side["benign general"] + 0.3, side


def test_screen_rejects_an_invalid_file_with_located_errors(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    res = runner.invoke(app, ["screen", str(bad)])
    assert res.exit_code == 2
    assert "line 2" in res.output and "missing_field" in res.output


def test_worker_without_redis_url_explains_itself(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FTGUARD_REDIS_URL", raising=False)
    res = runner.invoke(app, ["worker"])
    assert res.exit_code == 2 and "FTGUARD_REDIS_URL" in res.output


def test_audit_prints_diversity_and_coverage(runner: CliRunner, tmp_path: Path) -> None:
    import app.cli as cli

    cli._MODELS.clear()
    res = runner.invoke(app, ["audit", str(DEMO / "alignment.jsonl")])
    assert res.exit_code == 0, res.output
    assert "Vendi score" in res.output
    out = tmp_path / "audit.json"
    res = runner.invoke(
        app,
        [
            "audit",
            str(DEMO / "alignment.jsonl"),
            "--customer",
            str(DEMO / "customer_benign_general.jsonl"),
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "uncovered customer examples" in res.output
    assert "Uncovered:" in res.output and "safety training says least about it" in res.output
    got = json.loads(out.read_text())
    assert got["audit"]["uncovered_count"] >= 0 and "near" in got["uncovered_means"]
    # only the representation model was loaded, never the anchor model
    assert {k[0] for k in cli._MODELS} == {"sentence-transformers"}
    assert len(cli._MODELS) == 1


def test_rank_recommends_the_candidate_with_the_least_similar_alignment_data(
    runner: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "rank.json"
    res = runner.invoke(
        app,
        [
            "rank",
            str(DEMO / "customer_harmful_looking.jsonl"),
            "--candidate",
            f"refusals={DEMO / 'alignment.jsonl'}",
            "--candidate",
            f"chats={DEMO / 'customer_benign_general.jsonl'}",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert got["ranking"] == ["chats", "refusals"]
    text = res.output.replace("\n", " ")
    assert "Recommendation: fine-tune chats" in text and "bootstrap resamples" in text
    assert "ranking of candidate models" in res.output and "candidate model" in res.output
    assert "screening summary" not in res.output
    assert set(got["bootstrap"]["wins"]) == {"chats", "refusals"} and got["bootstrap"]["resamples"] == 200
    lo, hi = got["bootstrap"]["intervals"]["chats"]
    assert lo <= got["reports"]["chats"]["risk"]["risk_score"] <= hi
    # alignment sets of 100 and 61 examples: the ranking says they are not on the same footing
    assert got["warnings"] and "differ in size" in got["warnings"][0] and "differ in size" in text


@pytest.mark.usefixtures("one_thread")
def test_experiment_compare_and_calibrate_run_locally(
    runner: CliRunner, tmp_path: Path, tiny_llama: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    common = [
        str(DEMO / "customer_benign_lists.jsonl"),
        *("--size", "8", "--base-model", tiny_llama, "--backend", "causal-lm", "--model", tiny_llama),
        *("--rep-max-length", "48", "--max-length", "64", "--max-examples", "8", "--max-new-tokens", "3"),
    ]
    out = tmp_path / "one.json"
    res = runner.invoke(app, ["experiment", *common, "--selection", "low_sim", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "ftguard experiments" in res.output and "low_sim" in res.output
    rq_info = [
        r.getMessage() for r in caplog.records if r.name.startswith("rq") and r.levelno < logging.WARNING
    ]
    assert rq_info == []  # the burst worker runs quiet (it logged channel subscriptions, registry cleaning)
    # one bar per stage instead, each finished; no library's own bars
    for label in EXPERIMENT_STAGES.values():
        assert re.search(rf"{re.escape(label)}\s.*100%", res.output), (label, res.output)
    assert "Loading weights" not in res.output and "Traceback" not in res.output
    (one,) = json.loads(out.read_text())
    assert one["status"] == "succeeded" and one["results"]["prompts"] == {"harmful": 40, "benign": 20}
    res = runner.invoke(app, ["calibrate"])
    assert res.exit_code == 0 and "nothing to fit" in res.output
    res = runner.invoke(app, ["compare", *common, "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert [r["results"]["selection"]["selection"] for r in json.loads(out.read_text())] == [
        "high_sim",
        "random",
        "low_sim",
    ]
    res = runner.invoke(app, ["calibrate"])
    assert res.exit_code == 0 and "ftguard calibration" in res.output and "causal-lm" in res.output
    assert "│           4 │" in res.output  # the four experiments in this representation
    res = runner.invoke(app, ["experiment", *common, "--selection", "middle"])
    assert res.exit_code == 2 and "selection" in res.output
    res = runner.invoke(app, ["experiment", *common, "--judge", "llm"])
    assert res.exit_code == 2 and "FTGUARD_JUDGE_BASE_URL" in res.output
