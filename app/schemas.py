"""API schemas by role, separate from the SQL rows."""

from __future__ import annotations

from typing import Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from app.core.backends import BackendField, BackendName, LayerField, MaxLengthField, ModelField, PoolingField
from app.core.vocab import Decision, JobStatus, TierName
from app.screenings.report import ReportBody

T = TypeVar("T")


class RequestModel(BaseModel):
    """A request body or a part of one: an unknown field is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class RowPublic(BaseModel):
    """A resource as the API shows it, read from its SQL row."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, row: Any, **derived: Any) -> Self:
        """The resource of ROW: DERIVED's values, and the row's attributes for the other fields it names."""
        names = [n for n in cls.model_fields if n not in derived and hasattr(row, n)]
        return cls.model_validate({**{n: getattr(row, n) for n in names}, **derived})


def examples(*bodies: dict[str, Any]) -> ConfigDict:
    """A model config that shows BODIES as the schema's examples in the OpenAPI document."""
    return ConfigDict(json_schema_extra={"examples": list(bodies)})


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    details: Any | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class Page(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool

    @classmethod
    def whole(cls, data: list[T]) -> Page[T]:
        """A list that holds every item: no further page."""
        return cls(data=data, has_more=False)


class DatasetPublic(RowPublic):
    model_config = examples(
        {
            "id": "ds_1879a2b3c4d5e6f70a1b2c3d4e",
            "object": "dataset",
            "created_at": 1764374400,
            "filename": "customer.jsonl",
            "purpose": "fine-tune",
            "status": "ready",
            "container": "jsonl",
            "format": "openai-chat",
            "bytes": 20480,
            "examples": 60,
            "sha256": "9f2c...",
            "stats": {
                "examples": 60,
                "characters": 18000,
                "approx_tokens": 4500,
                "duplicates": 0,
                "role_counts": {"system": 45, "user": 60, "assistant": 60},
                "mean_characters": 300.0,
            },
        }
    )
    id: str
    object: Literal["dataset"] = "dataset"
    created_at: int
    filename: str | None = Field(
        description="null for an alignment or anchor set when the key lacks the alignment:read scope."
    )
    purpose: str
    status: Literal["validating", "ready", "invalid"]
    container: str | None
    format: str | None
    bytes: int
    examples: int
    sha256: str | None = Field(
        description="SHA-256 of the bytes; null for an alignment or anchor set when the key lacks the "
        "alignment:read scope."
    )
    stats: dict[str, Any]


class RecordErrorPublic(BaseModel):
    line: int | None = Field(description="Line where the record starts or the error is; the row for Parquet.")
    record: int | None = Field(description="1-based record (row) number.")
    field: str | None = Field(description="The field at fault, as a path (`messages[1].tool_calls[0]`).")
    code: str
    message: str


class DatasetValidation(BaseModel):
    """A validation without storage: what an upload would say, valid or not (`ftguard validate --json`)."""

    object: Literal["dataset.validation"] = "dataset.validation"
    valid: bool
    filename: str
    container: str | None
    format: str | None
    bytes: int
    sha256: str
    examples: int
    stats: dict[str, Any]
    error_count: int
    errors: list[RecordErrorPublic]


class DatasetPreview(BaseModel):
    object: Literal["dataset.preview"] = "dataset.preview"
    dataset_id: str
    data: list[dict[str, Any]]


class ScreeningCreate(RequestModel):
    model_config = examples(
        {
            "dataset_id": "ds_1879a2b3c4d5e6f70a1b2c3d4e",
            "alignment_dataset_id": "ds_1879a2b3c4d5e6f70a1b2c3d4f",
            "top_k": 5,
            "subset_size": 100,
        }
    )
    dataset_id: str = Field(description="The customer's fine-tuning dataset.")
    alignment_dataset_id: str = Field(
        description="The provider's safety-alignment dataset (purpose alignment)."
    )
    backend: BackendField = None
    model: ModelField = None
    layer: LayerField = -1
    pooling: PoolingField = "last"
    max_length: MaxLengthField = 512
    top_k: int = Field(default=5, ge=1, le=100, description="Nearest alignment examples kept per example.")
    subset_size: int = Field(default=100, ge=1, le=1_000_000, description="Size of each alignment subset.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the Random subset.")
    center: bool | None = Field(
        default=None,
        description="Subtract the alignment mean before cosine; default: on for causal-lm (LLM hidden states "
        "cluster, so raw cosines are all high), off for sentence-transformers.",
    )
    anchors: bool = Field(
        default=True, description="Measure the harmful-anchor margin (He et al. 2024) and score it."
    )
    harmful_anchors_dataset_id: str | None = Field(
        default=None, description="Dataset of purpose harmful-anchors; default: the bundled anchors."
    )
    safe_anchors_dataset_id: str | None = Field(
        default=None, description="Dataset of purpose safe-anchors; default: the bundled anchors."
    )
    anchor_backend: BackendName | None = Field(
        default=None, description="Backend of the anchor signal; default from settings."
    )
    anchor_model: str | None = Field(
        default=None, max_length=500, description="Model of the anchor signal (a registry name)."
    )
    policy: str | None = Field(
        default=None,
        max_length=64,
        description="The policy (GET /v1/policies) that decides approve, review or reject when the "
        "screening finishes; default: the tenant's `default` policy.",
    )


class CandidateIn(RequestModel):
    name: str = Field(min_length=1, max_length=100, description="A label for the candidate model.")
    alignment_dataset_id: str = Field(description="The candidate's safety-alignment set.")
    backend: BackendName | None = None
    model: str | None = Field(
        default=None, max_length=500, description="The candidate's own model (a registry name), if any."
    )


class RankingCreate(RequestModel):
    model_config = examples(
        {
            "dataset_id": "ds_1879a2b3c4d5e6f70a1b2c3d4e",
            "candidates": [
                {"name": "model-a", "alignment_dataset_id": "ds_1879a2b3c4d5e6f70a1b2c3d50"},
                {"name": "model-b", "alignment_dataset_id": "ds_1879a2b3c4d5e6f70a1b2c3d51"},
            ],
        }
    )
    dataset_id: str
    candidates: list[CandidateIn] = Field(min_length=2, max_length=20)
    top_k: int = Field(default=5, ge=1, le=100)
    subset_size: int = Field(default=100, ge=1, le=1_000_000)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    center: bool | None = None
    anchors: bool = True


class RankingPublic(BaseModel):
    id: str
    object: Literal["ranking"] = "ranking"
    created_at: int
    dataset_id: str
    status: Literal["running", "succeeded", "failed"]
    candidates: list[dict[str, Any]]
    recommendation: dict[str, Any] | None


class ScreeningFilters(BaseModel):
    """The filters of `GET /v1/screenings` (query parameters)."""

    status: JobStatus | None = None
    tier: TierName | None = None
    dataset_id: str | None = Field(default=None, max_length=64)


class ScreeningPublic(RowPublic):
    model_config = examples(
        {
            "id": "scr_1879a2b3c4d5e6f70a1b2c3d4e",
            "object": "screening",
            "created_at": 1764374400,
            "dataset_id": "ds_1879a2b3c4d5e6f70a1b2c3d4e",
            "alignment_dataset_id": "ds_1879a2b3c4d5e6f70a1b2c3d4f",
            "status": "succeeded",
            "stage": "done",
            "progress": 1.0,
            "attempts": 1,
            "risk_score": 71.3,
            "tier": "high",
            "error": None,
            "params": {"top_k": 5, "subset_size": 100},
            "started_at": 1764374401,
            "finished_at": 1764374409,
        }
    )
    id: str
    object: Literal["screening"] = "screening"
    created_at: int
    dataset_id: str
    alignment_dataset_id: str
    status: JobStatus
    stage: str | None
    progress: float
    attempts: int
    risk_score: float | None
    tier: str | None
    error: dict[str, Any] | None
    params: dict[str, Any]
    started_at: int | None
    finished_at: int | None
    policy: str | None = Field(default=None, description="The policy named at creation (None: default).")
    policy_version: int | None = Field(default=None, description="The policy version of the decision.")
    decision: Decision | None = Field(
        default=None, description="The policy's decision, set when the screening succeeds."
    )
    decision_rule: dict[str, Any] | None = Field(
        default=None,
        description="How the decision was made: policy, version, and the rule that fired (metric, part, "
        "value, threshold), or null when none fired.",
    )
    baseline: dict[str, Any] | None = Field(
        default=None,
        description="Set on a re-screened variant (POST /v1/screenings/{id}/rescreen): the screening it came "
        "from (screening_id, dataset_id, risk_score, tier, decision) and the variant (variant, form, kept, "
        "removed, added; share, selection, seed, filtered for augmented).",
    )


class EventPublic(RowPublic):
    id: int
    object: Literal["event"] = "event"
    created_at: int
    level: str
    type: str
    message: str
    data: dict[str, Any]


class ReportPublic(BaseModel):
    object: Literal["screening.report"] = "screening.report"
    screening_id: str
    created_at: int
    redacted: bool = Field(default=False, description="Alignment texts removed (record numbers kept).")
    decision: str | None = Field(default=None, description="The screening's policy decision.")
    decision_rule: dict[str, Any] | None = Field(default=None, description="The rule that fired.")
    baseline: dict[str, Any] | None = Field(
        default=None, description="A re-screened variant's baseline screening and its risk (see screening)."
    )
    report: ReportBody


class AuditPublic(BaseModel):
    object: Literal["screening.audit"] = "screening.audit"
    screening_id: str
    audit: dict[str, Any]


class ScoresPage(Page[dict[str, Any]]):
    """A page of per-example scores, paged by offset: a list with its side and its place in the whole."""

    side: str
    total: int
    offset: int


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


class TenantCreate(RequestModel):
    model_config = examples({"id": "acme", "name": "Acme"})
    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="Slug: a-z, 0-9, '-' and '_'; the tenant id."
    )
    name: str | None = Field(default=None, max_length=200, description="Display name; default: the id.")


class TenantPublic(RowPublic):
    id: str
    object: Literal["tenant"] = "tenant"
    name: str
    created_at: int


class ApiKeyCreate(RequestModel):
    model_config = examples({"tenant_id": "acme", "name": "pipeline", "role": "member"})
    tenant_id: str = Field(max_length=64)
    name: str = Field(default="", max_length=200, description="A label for people (e.g. what uses it).")
    role: Literal["admin", "member"] = Field(
        default="member", description="admin: also the /v1/admin routes, for every tenant."
    )
    scopes: list[Literal["alignment:read"]] | None = Field(
        default=None,
        max_length=8,
        description="Default: every scope. Without alignment:read the key gets reports redacted and "
        "cannot read alignment or anchor texts.",
    )


class ApiKeyPublic(RowPublic):
    id: str
    object: Literal["api_key"] = "api_key"
    tenant_id: str
    name: str
    prefix: str = Field(description="The first characters of the key, to tell keys apart. Not a secret.")
    role: str
    scopes: list[str]
    created_at: int
    revoked_at: int | None


class ApiKeyCreated(ApiKeyPublic):
    key: str | None = Field(
        description="The secret. Shown in this response only: it is stored hashed. null when this is an "
        "Idempotency-Key replay of the creating request."
    )


class ModelPublic(BaseModel):
    id: str = Field(description="The name to use in requests.")
    object: Literal["model"] = "model"
    bundled: bool = Field(description="Ships with ftguard.")
    default_for: list[str] = Field(description="The settings it is the default of, if any.")
