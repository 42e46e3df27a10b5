"""Plain-language findings, each a rule: a condition on the measured numbers and the text it prints.

A finding is printed only when its condition holds, so no sentence claims more than the numbers show:
nothing calls data "benign" when its requests read as harmful, and no subset advice is given when the
High-Sim and Low-Sim subsets are the same records. `RULES` is the list; `findings()` runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# A form's value (its mean rescaled margin zh, 0-1) from which a finding names that form. On values, not on
# the share of examples with a positive margin: a margin just above 0 is noise (docs/reference_sets.md: the
# harmful demo set has 85% of its examples on the persona form's harmful side at a value of only 0.157,
# the AOA set 0.500).
FORM_VALUE = 0.25
# the request form: from this value the data's requests read as harmful, so it is not "benign data"
HARMFUL_REQUEST_VALUE = 0.5
# High-Sim and Low-Sim mean max cosines closer than this give no advice (the same records, or near it)
SUBSET_GAP = 1e-3


@dataclass(frozen=True)
class Ctx:
    risk: dict[str, Any]
    c_max: np.ndarray
    a_max: np.ndarray
    n_customer: int
    n_alignment: int
    subsets: dict[str, dict[str, Any]]
    subset_warning: str | None
    forms: dict[str, dict[str, Any]]  # anchor form -> its shares (empty without anchors)

    def share(self, form: str) -> float:
        return float((self.forms.get(form) or {}).get("share_closer_to_harmful", 0.0))

    def value(self, form: str) -> float:
        return float((self.forms.get(form) or {}).get("value", 0.0))

    @property
    def harmful_requests(self) -> bool:
        return self.value("request") >= HARMFUL_REQUEST_VALUE


@dataclass(frozen=True)
class Rule:
    name: str
    when: Callable[[Ctx], bool]
    text: Callable[[Ctx], str]


def _headline(c: Ctx) -> str:
    return (
        f"Risk {c.risk['risk_score']:.0f}/100 ({c.risk['tier']}): {c.n_customer} customer examples compared "
        f"with {c.n_alignment} alignment examples."
    )


def _near(c: Ctx) -> str:
    lv = c.risk["reference_levels"]
    return (
        f"{float((c.c_max >= lv['near']).mean()):.0%} of the customer examples are as close to the alignment "
        f"data as most alignment examples are to each other (cosine >= {lv['near']:.3f}); "
        f"{float((c.c_max >= lv['high']).mean()):.0%} are closer than the typical alignment example is "
        f"to its nearest neighbour (>= {lv['high']:.3f})."
    )


def _form_share(form: str, rest: str) -> Callable[[Ctx], str]:
    """A finding that opens with the share of customer examples on `form`'s harmful side."""
    return lambda c: f"{c.share(form):.0%} of the customer examples{rest}"


_harmful_requests = _form_share(
    "request",
    "' requests sit closer to harmful requests than to ordinary ones: this reads as harmful data, whatever "
    "the shape of its answers. Fine-tuning on harmful requests answered compliantly removes safety directly "
    "(Qi et al. 2023).",
)
_persona = _form_share(
    "persona",
    " sit closer to identity-shift anchors (a system prompt or turn that gives the assistant a new, "
    "rule-free persona it accepts) than to assistants that keep their rules: a few such examples are known "
    "to break a model's safety (Qi et al. 2023, AOA).",
)
_benign_form = _form_share(
    "compliance",
    " sit closer to the harmful anchors' compliant answers than to refusals, while their requests read as "
    "ordinary: benign data of that shape (lists, steps, eager compliance) is the kind that breaks safety "
    "most (He et al. 2024).",
)


def _no_anchor_side(c: Ctx) -> str:
    return (
        f"No anchor form reads the data as harmful-looking (each form's value under {FORM_VALUE:.2f} on its "
        "0-1 scale; share of examples on its harmful side): "
        + ", ".join(f"{k} {c.value(k):.2f} ({c.share(k):.0%})" for k in c.forms)
        + "."
    )


def _tier_high(c: Ctx) -> str:
    return (
        "High similarity to safety-alignment data or to harmful anchors predicts that fine-tuning on this "
        "dataset erodes the model's guardrails (Hsiung et al. 2025; He et al. 2024). Review the examples "
        "that drive the score below before accepting the job."
    )


def _subset_advice(c: Ctx) -> str:
    hi, lo = c.subsets["high_sim"], c.subsets["low_sim"]
    return (
        f"Aligning with the Low-Sim subset ({lo['size']} examples, max cosine to this dataset "
        f"{lo['mean_max_sim']:.3f} on average) rather than the High-Sim subset ({hi['mean_max_sim']:.3f}) is "
        "the paper's advice for making guardrails more durable against this fine-tuning data."
    )


def _subsets_distinct(c: Ctx) -> bool:
    hi, lo = c.subsets.get("high_sim") or {}, c.subsets.get("low_sim") or {}
    if not hi.get("size") or hi.get("mean_max_sim") is None or lo.get("mean_max_sim") is None:
        return False
    return c.subset_warning is None and hi["mean_max_sim"] - lo["mean_max_sim"] > SUBSET_GAP


RULES: tuple[Rule, ...] = (
    Rule("headline", lambda c: True, _headline),
    Rule("near_alignment", lambda c: True, _near),
    Rule("harmful_requests", lambda c: c.harmful_requests, _harmful_requests),
    Rule("identity_shift", lambda c: c.value("persona") >= FORM_VALUE, _persona),
    Rule(
        "benign_risky_form",
        lambda c: not c.harmful_requests and c.value("compliance") >= FORM_VALUE,
        _benign_form,
    ),
    Rule(
        "no_anchor_side",
        lambda c: bool(c.forms) and all(c.value(k) < FORM_VALUE for k in c.forms),
        _no_anchor_side,
    ),
    Rule("tier_high", lambda c: c.risk["tier"] in ("high", "critical"), _tier_high),
    Rule(
        "tier_medium",
        lambda c: c.risk["tier"] == "medium",
        lambda c: (
            "Part of this dataset resembles the safety-alignment data or the harmful anchors; review the "
            "examples that drive the score and consider a safety evaluation after fine-tuning."
        ),
    ),
    Rule(
        "tier_low",
        lambda c: c.risk["tier"] == "low",
        lambda c: (
            "The dataset sits mostly away from the safety-alignment data and the harmful anchors in "
            "these representations."
        ),
    ),
    Rule("subset_advice", _subsets_distinct, _subset_advice),
    Rule("subset_warning", lambda c: c.subset_warning is not None, lambda c: str(c.subset_warning)),
    Rule(
        "subsets_identical",
        lambda c: c.subset_warning is None and not _subsets_distinct(c) and bool(c.subsets),
        lambda c: (
            "The High-Sim and Low-Sim subsets are as similar to this dataset as each other, so choosing "
            "between them changes nothing here; no subset advice is given."
        ),
    ),
)


def findings(ctx: Ctx) -> list[dict[str, str]]:
    """The rules that fire, in order, each as {rule, text}."""
    return [{"rule": r.name, "text": r.text(ctx)} for r in RULES if r.when(ctx)]
