"""API shapes of policies."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, Field, model_validator

from app.core.vocab import Decision, Selection
from app.policies import decide
from app.schemas import RequestModel, RowPublic, examples

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class Rule(RequestModel):
    metric: decide.Metric = Field(description="What the rule reads (see README: Policies).")
    part: decide.Part | None = Field(
        default=None, description="The part of the risk score, with metric `part`."
    )
    threshold: float = Field(ge=0, le=1e9, description="The rule fires when the value is >= threshold.")
    decision: Decision

    @model_validator(mode="after")
    def _part_iff_metric_part(self) -> Rule:
        if (self.metric == "part") != (self.part is not None):
            raise ValueError("`part` is required with metric 'part' and only with it")
        return self


class PolicyBody(RequestModel):
    model_config = examples(
        {
            "description": "reject list-heavy, harmful-looking data",
            "rules": [
                {"metric": "risk_score", "threshold": 60, "decision": "reject"},
                {"metric": "part", "part": "harmful_anchor_margin", "threshold": 0.4, "decision": "review"},
                {"metric": "flagged_rows", "threshold": 10, "decision": "review"},
            ],
            "row_threshold": 70,
        }
    )
    description: str = Field(default="", max_length=500)
    rules: list[Rule] = Field(min_length=1, max_length=50)
    row_threshold: float = Field(
        default=decide.DEFAULT_POLICY["row_threshold"],
        ge=0,
        le=100,
        description="A customer example whose own row score (0-100) is above this is a flagged row.",
    )
    otherwise: Decision = Field(default="approve", description="The decision when no rule fires.")

    def stored(self) -> dict[str, Any]:
        return self.model_dump(exclude={"description"})


class PolicyCreate(PolicyBody):
    name: str = Field(pattern=NAME_PATTERN, description="Lower-case slug; `default` overrides the built-in.")


class PolicyPublic(RowPublic):
    object: Literal["policy"] = "policy"
    id: str
    name: str
    version: int = Field(description="0 is the built-in default; every PUT adds one.")
    created_at: int
    description: str
    rules: list[dict[str, Any]]
    row_threshold: float
    otherwise: str
    builtin: bool = False

    @classmethod
    def of(cls, row: Any, **derived: Any) -> Self:
        """The row's own columns, and the body's rules, row threshold and fallback decision."""
        return super().of(
            row,
            rules=row.body["rules"],
            row_threshold=float(row.body.get("row_threshold", decide.DEFAULT_POLICY["row_threshold"])),
            otherwise=row.body.get("otherwise", "approve"),
            builtin=row.version == 0,
            **derived,
        )


class DecisionRequest(RequestModel):
    policy: str | None = Field(
        default=None, max_length=64, description="Policy name; default: the screening's own policy."
    )
    version: int | None = Field(default=None, ge=0, description="Policy version; default: the latest.")


class FlaggedPage(BaseModel):
    object: Literal["list"] = "list"
    total: int = Field(description="Flagged rows in all.")
    row_threshold: float
    has_more: bool
    data: list[dict[str, Any]] = Field(
        description="{record_number, line, row_score, parts, nearest_alignment: [{record, sim}], "
        "nearest_harmful_anchor: {form, anchors, record, sim, margin} or null (no anchors, or a screening "
        "stored before it was kept), record}"
    )


class RescreenRequest(RequestModel):
    """Screen a variant of a finished screening's customer data (README: Flagged rows and safer datasets)."""

    model_config = examples({"variant": "filtered"}, {"variant": "augmented", "share": 0.1})
    variant: Literal["filtered", "augmented"] = Field(
        description="filtered: minus the flagged rows; augmented: mixed with safety examples (needs the "
        "alignment:read scope)."
    )
    share: float = Field(
        default=0.1, gt=0, le=1, description="augmented: safety examples per customer example, in (0, 1]."
    )
    selection: Selection = Field(
        default="random", description="augmented: seeded sample, or the alignment records nearest the data."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="augmented: seed of `random`.")
    filtered: bool = Field(default=False, description="augmented: leave the flagged rows out too.")
