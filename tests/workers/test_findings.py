"""Findings are rules: each is tested firing and not firing. And the score's two readings: an attack form's
alarm is not cancelled by low similarity, and per-example contributions add up to the score."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from workers.screenings import findings as F
from workers.screenings import risk
from workers.screenings.screening import subset_size_for

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

LEVELS = {"floor": 0.2, "near": 0.5, "high": 0.6}


def ctx(
    *,
    tier: str = "low",
    forms: dict[str, float] | None = None,
    subsets: tuple[float, float] | None = (0.6, 0.2),
    warning: str | None = None,
) -> F.Ctx:
    c_max = np.array([0.1, 0.3, 0.55, 0.7])
    subs: dict[str, Any] = {}
    if subsets is not None:
        subs = {
            "high_sim": {"size": 10, "mean_max_sim": subsets[0]},
            "low_sim": {"size": 10, "mean_max_sim": subsets[1]},
            "random": {"size": 10, "mean_max_sim": 0.4},
        }
    return F.Ctx(
        risk={"risk_score": 10.0, "tier": tier, "reference_levels": LEVELS},
        c_max=c_max,
        a_max=np.array([0.6, 0.2]),
        n_customer=4,
        n_alignment=100,
        subsets=subs,
        subset_warning=warning,
        # each form's value (mean zh) and, loosely tied to it, its share on the harmful side
        forms={
            k: {"value": v, "share_closer_to_harmful": min(1.0, 1.5 * v)} for k, v in (forms or {}).items()
        },
    )


def fired(c: F.Ctx) -> dict[str, str]:
    return {f["rule"]: f["text"] for f in F.findings(c)}


def test_every_rule_is_tested() -> None:
    assert {r.name for r in F.RULES} == {
        "headline",
        "near_alignment",
        "harmful_requests",
        "identity_shift",
        "benign_risky_form",
        "no_anchor_side",
        "tier_high",
        "tier_medium",
        "tier_low",
        "subset_advice",
        "subset_warning",
        "subsets_identical",
    }


def test_headline_and_near_always_fire() -> None:
    out = fired(ctx())
    assert out["headline"].startswith("Risk 10/100 (low)") and "50%" in out["near_alignment"]


def test_harmful_requests_are_never_called_benign() -> None:
    harmful = fired(ctx(forms={"compliance": 0.85, "persona": 0.1, "request": 0.98}))
    assert "harmful_requests" in harmful and "benign_risky_form" not in harmful
    assert not any("benign data" in t for t in harmful.values())
    assert "reads as harmful data" in harmful["harmful_requests"]
    lists = fired(ctx(forms={"compliance": 0.82, "persona": 0.1, "request": 0.12}))
    assert "benign_risky_form" in lists and "harmful_requests" not in lists
    assert "benign data of that shape" in lists["benign_risky_form"]


def test_benign_form_wording_needs_examples_on_the_harmful_side() -> None:
    none = fired(ctx(forms={"compliance": 0.0, "persona": 0.0, "request": 0.0}))
    assert "benign_risky_form" not in none and "no_anchor_side" in none
    assert "compliance 0.00 (0%)" in none["no_anchor_side"]
    some = fired(ctx(forms={"compliance": 0.3, "persona": 0.0, "request": 0.0}))
    assert "no_anchor_side" not in some
    assert "no_anchor_side" not in fired(ctx(forms=None))  # no anchors: nothing said about them


def test_identity_shift_fires_on_the_persona_form_only() -> None:
    # the measured AOA and harmful demo values (docs/reference_sets.md)
    aoa = fired(ctx(forms={"compliance": 0.0, "persona": 0.5, "request": 0.309}))
    assert "identity_shift" in aoa and "AOA" in aoa["identity_shift"]
    assert "harmful_requests" not in aoa  # AOA's requests are harmless ("explain gravity")
    demo = fired(ctx(forms={"compliance": 0.539, "persona": 0.157, "request": 0.796}))
    assert "identity_shift" not in demo and "harmful_requests" in demo


@pytest.mark.parametrize(
    ("tier", "rule"),
    [("low", "tier_low"), ("medium", "tier_medium"), ("high", "tier_high"), ("critical", "tier_high")],
)
def test_one_tier_rule_fires_per_tier(tier: str, rule: str) -> None:
    out = fired(ctx(tier=tier))
    assert rule in out
    assert len({"tier_low", "tier_medium", "tier_high"} & set(out)) == 1


def test_no_subset_advice_from_identical_subsets() -> None:
    distinct = fired(ctx(subsets=(0.6, 0.2)))
    assert "subset_advice" in distinct and "subsets_identical" not in distinct
    assert "dataset 0.200" in distinct["subset_advice"] and "(0.600)" in distinct["subset_advice"]
    same = fired(ctx(subsets=(0.488, 0.488)))
    assert "subset_advice" not in same and "subsets_identical" in same
    warned = fired(ctx(subsets=(0.6, 0.2), warning="subset_size 100 is not under half"))
    assert "subset_advice" not in warned and warned["subset_warning"].startswith("subset_size 100")
    assert "subsets_identical" not in warned and "subset_warning" not in distinct


def test_subset_size_is_clamped_under_half_of_the_alignment_set() -> None:
    assert subset_size_for(49, 100) == (49, None)
    size, warning = subset_size_for(100, 100)
    assert size == 49 and warning is not None and "clamped to 49" in warning
    assert subset_size_for(50, 100)[0] == 49
    assert subset_size_for(5, 2) == (0, subset_size_for(5, 2)[1])


def test_an_attack_form_is_not_cancelled_by_low_similarity() -> None:
    c_max = np.full(10, 0.1)  # far from the alignment set
    zero = np.zeros(10)
    persona = np.r_[np.ones(5), np.zeros(5)]
    r = risk.score(c_max, LEVELS, {"compliance": zero, "persona": persona, "request": zero})
    assert r["risk_score"] == 50.0 and r["tier"] == "high" and r["counted"] == "attack"
    attack = next(p for p in r["parts"] if p["name"] == "attack_form_margin")
    assert attack["form"] == "persona" and attack["counted"]
    # the same numbers as a weighted sum would have given ~0: the old combination hid it
    assert r["readings"]["weighted"] == 0.0
    # and an anchor form that sees nothing does not pull a similar dataset down
    close = risk.score(np.full(10, 0.9), LEVELS, {"compliance": zero, "persona": zero, "request": zero})
    assert close["risk_score"] == 70.0 and close["counted"] == "weighted"


def test_contributions_add_up_to_the_score() -> None:
    rng = np.random.default_rng(1)
    c_max = rng.uniform(0.1, 0.8, 40)
    z = {k: rng.uniform(0, 1, 40) for k in ("compliance", "persona", "request")}
    for anchor_z in (None, z, {k: v * 0.01 for k, v in z.items()}):
        r = risk.score(c_max, LEVELS, anchor_z)
        total, parts = risk.contributions(c_max, LEVELS, r, anchor_z)
        assert total.sum() == pytest.approx(r["risk_score"], abs=0.05)
        assert set(parts) == {p["name"] for p in r["parts"]}
