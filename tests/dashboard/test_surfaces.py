"""One report through all five surfaces: each must say whether the score is calibrated, what the tiers
mean and which models (and anchor sets) made it, from the one source (app.screenings.explain)."""

from __future__ import annotations

import json
import re

from rich.console import Console

from app.cli import print_report
from app.dashboard.render import report_document
from app.screenings import explain


def _checks(text: str) -> None:
    low = text.lower()
    assert "uncalibrated" in low, "calibration status missing"
    for t in explain.tier_definitions():  # every tier with its cut-offs, and what critical means
        assert t["tier"] in low and t["range"] in text, t
    assert explain.TIER_MEANINGS["critical"] in text
    assert "all-minilm-l6-v2" in low, "model missing"
    assert "anchor" in low
    assert "not been validated against measured harm" in low or "validation study" in low, "validation"


def test_one_report_shows_calibration_tiers_and_models_on_every_surface(dash) -> None:
    sid = dash.ids["harmful"]
    api = dash.client.get(f"/v1/screenings/{sid}/report").json()["report"]
    # 1. API JSON: the sections are in the body, and the calibration says uncalibrated
    assert api["calibration"]["calibrated"] is False
    assert api["about"]["calibration"]["calibrated"] is False
    assert api["about"]["tiers"] == explain.tier_definitions()
    assert {m["use"] for m in api["about"]["models"]} == {"alignment similarity", "anchor margin"}
    assert {a["form"] for a in api["about"]["anchor_sets"]} == {"compliance", "persona", "request"}
    _checks(json.dumps(api["about"]))
    # 2. CLI JSON: what `ftguard screen --json` writes is the body itself
    cli_json = json.loads(json.dumps(api))
    assert cli_json["about"] == api["about"]
    # 3. CLI table
    console = Console(record=True, width=200)
    print_report("customer_harmful_looking.jsonl", api, console)
    table = console.export_text()
    _checks(table)
    assert "Calibration: UNCALIBRATED" in table
    # 4. dashboard page and 5. standalone HTML report
    page = dash.client.get(f"/dashboard/screenings/{sid}").text
    doc = report_document(api, title="report")
    for html in (page, doc):
        text = re.sub(r"<[^>]+>", " ", html).replace("&#39;", "'").replace("&amp;", "&")
        text = re.sub(r"\s+", " ", text)
        _checks(text)
        assert 'data-calibrated="no"' in html


def test_a_report_without_the_sections_is_labelled_uncalibrated() -> None:
    """Reports stored before these sections existed render them too (derived from the body)."""
    body = {"representation": {"backend": "sentence-transformers", "model": "bundled:all-minilm-l6-v2"}}
    about = explain.about(body)
    assert about["calibration"]["calibrated"] is False and about["calibration_label"].startswith(
        "UNCALIBRATED"
    )
    assert about["models"] == [
        {
            "use": "alignment similarity",
            "backend": "sentence-transformers",
            "model": "bundled:all-minilm-l6-v2",
        }
    ]
    calibrated = explain.about(
        body | {"calibration": {"calibrated": True, "experiments": 7, "metric": "rate"}}
    )
    assert calibrated["calibration_label"].startswith("calibrated on 7 experiments")
