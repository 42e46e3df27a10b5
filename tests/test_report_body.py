"""The typed report body (app/screenings/report.py): a stored body reads and writes back unchanged, extra
keys survive, a body without a required section is refused, and the API documents the sections."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from app.screenings.report import ReportBody


def body() -> dict[str, Any]:
    dist = {"count": 2, "mean": 0.5, "std": 0.1, "min": 0.4, "max": 0.6, "percentiles": {"p50": 0.5}}
    return {
        "object": "screening.report",
        "representation": {"backend": "sentence-transformers", "model": "m", "identity": "i", "dim": 384},
        "similarity": {"method": "exact", "k": 5},
        "params": {"top_k": 5, "subset_size": 100, "subset_size_used": 2, "seed": 0, "center": False},
        "customer": {"examples": 2, "sha256": "ab", "format": "alpaca", "training": {"trained_turns": 2}},
        "alignment": {"examples": 3, "sha256": "cd"},
        "risk": {
            "risk_score": 42.5,
            "tier": "medium",
            "parts": [{"name": "mean_similarity", "value": 0.5, "weight": 0.3, "contribution": 15, "new": 1}],
            "reference_levels": {"floor": 0.2, "near": 0.3, "high": 0.4},
        },
        "distributions": {"customer_max_sim": {**dist, "histogram": {"edges": [0.0, 1.0], "counts": [2]}}},
        "reference": None,
        "shares_above": {"near": 0.5},
        "subsets": {"high_sim": {"size": 2, "mean_max_sim": 0.6}},
        "top_examples": [{"record": 1, "max_sim": 0.6}],
        "anchors": None,
        "audit": {},
        "findings": ["one"],
        "finding_rules": ["rule"],
        "warnings": [],
        "timings_s": {"total": 1.5},
        "cache": {"alignment_hit": False},
        "added_by_a_later_version": {"kept": True},
    }


def test_a_body_reads_and_writes_back_unchanged() -> None:
    b = body()
    rep = ReportBody.read(copy.deepcopy(b))
    assert rep.dump() == b  # no default is added (calibration, about, formula, ...) and no key is lost
    assert rep.risk.risk_score == 42.5 and rep.risk.part("mean_similarity").weight == 0.3  # type: ignore[union-attr]
    assert rep.risk.part("nope") is None and rep.customer.examples == 2
    assert rep.distributions["customer_max_sim"].histogram["counts"] == [2]  # counts stay integers


@pytest.mark.parametrize("section", ["risk", "representation", "params", "distributions", "findings"])
def test_a_body_without_a_required_section_is_refused(section: str) -> None:
    b = body()
    del b[section]
    with pytest.raises(ValidationError) as err:
        ReportBody.read(b)
    assert section in str(err.value)


def test_a_wrongly_typed_score_is_refused() -> None:
    b = body()
    b["risk"]["risk_score"] = "high"
    with pytest.raises(ValidationError):
        ReportBody.read(b)


def test_the_api_documents_the_report_sections(client) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    report = schemas["ReportPublic"]["properties"]["report"]
    assert report["$ref"].endswith("/ReportBody")
    body_schema = schemas["ReportBody"]
    assert {"risk", "distributions", "top_examples", "findings"} <= set(body_schema["required"])
    assert "risk_score" in schemas["Risk"]["properties"]
