"""The risk report's body, typed: what the worker writes (`workers/screenings/screening.py` builds it, the job
adds `calibration` and `about`), what `transitions.succeed` stores (validated here, so a report that lacks
a section fails its screening instead of being stored), what the API documents at
GET /v1/screenings/{id}/report, and what readers use by attribute instead of string keys.

Every model keeps fields it does not name (`extra="allow"`): sections grow (a new finding, a new timing)
without a schema change, and reports stored by older versions still read. `dump` writes back exactly the
keys that were given, so a stored body is unchanged by a read and a write.

The per-example arrays are not here: they live in the `.npz` at `Report.scores_key`, read through
`app.screenings.scores.Scores` (one page of rows at a time) under the names in `scores.Arrays`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer


class Section(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    @model_serializer(mode="wrap")
    def _given_keys_only(self, handler: SerializerFunctionWrapHandler):  # unannotated: the schema stays
        """Serialise the keys that were given (a default is not written back), in their schema."""
        out = handler(self)
        return {k: v for k, v in out.items() if k in self.model_fields_set}


class Representation(Section):
    backend: str
    model: str
    identity: str = Field(description="What the vectors depend on (backend, model, revision, layer, ...).")
    dim: int


class ReportParams(Section):
    top_k: int
    subset_size: int
    subset_size_used: int
    seed: int
    center: bool


class DatasetSummary(Section):
    examples: int
    format: str | None = None
    container: str | None = None


class RiskPart(Section):
    name: str
    value: float | None
    weight: float
    contribution: float
    description: str = ""
    counted: bool = True


class Risk(Section):
    risk_score: float = Field(description="0-100.")
    tier: str
    formula: str = ""
    parts: list[RiskPart] = []
    readings: dict[str, float] = Field(
        default={}, description="Each reading of the score; `counted` names the one used."
    )
    counted: str | None = None
    reference_levels: dict[str, float] = Field(
        default={}, description="Cosine levels (floor, near, high) from the alignment set's own neighbours."
    )
    anchor_levels: dict[str, Any] | None = None

    def part(self, name: str) -> RiskPart | None:
        return next((p for p in self.parts if p.name == name), None)


class Distribution(Section):
    count: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    percentiles: dict[str, float] = {}
    histogram: dict[str, Any] = {}


class SubsetSummary(Section):
    size: int
    mean_max_sim: float | None


class ReportBody(Section):
    """A screening's report. The sections a screening always writes are required."""

    object: Literal["screening.report"] = "screening.report"
    representation: Representation
    similarity: dict[str, Any] = Field(
        description="How the similarities were computed (method, precision, k)."
    )
    params: ReportParams
    customer: DatasetSummary
    alignment: DatasetSummary
    risk: Risk
    distributions: dict[str, Distribution]
    reference: dict[str, Any] | None = Field(description="The alignment set's own nearest-neighbour levels.")
    shares_above: dict[str, float] = Field(description="Share of customer examples at or above each level.")
    subsets: dict[str, SubsetSummary]
    top_examples: list[dict[str, Any]] = Field(description="The customer examples that drive the score.")
    anchors: dict[str, Any] | None = Field(description="The harmful/safe anchor margins (None: no anchors).")
    audit: dict[str, Any] = Field(description="Diversity and coverage of the two sets.")
    findings: list[str]
    finding_rules: list[str]
    warnings: list[str]
    timings_s: dict[str, float]
    cache: dict[str, Any]
    calibration: dict[str, Any] | None = None
    about: dict[str, Any] | None = None
    redaction: dict[str, str] | None = None

    @classmethod
    def read(cls, body: dict[str, Any]) -> ReportBody:
        return cls.model_validate(body)

    def dump(self) -> dict[str, Any]:
        """The JSON body, with the keys it was given and no others."""
        return self.model_dump(mode="json")
