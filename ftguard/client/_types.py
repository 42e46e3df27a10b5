"""Typed objects for every resource. Light pydantic models of the client's own (no server import): fields
the server adds later are kept (`extra="allow"`) and read as attributes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

FINISHED = ("succeeded", "failed", "cancelled")


class APIObject(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class Dataset(APIObject):
    id: str
    object: str = "dataset"
    created_at: int
    filename: str | None = None
    purpose: str
    status: str
    container: str | None = None
    format: str | None = None
    bytes: int = 0
    examples: int = 0
    sha256: str | None = None
    stats: dict[str, Any] = {}


class RecordError(APIObject):
    line: int | None = None
    record: int | None = None
    field: str | None = None
    code: str
    message: str


class DatasetValidation(APIObject):
    object: str = "dataset.validation"
    valid: bool
    filename: str
    container: str | None = None
    format: str | None = None
    bytes: int = 0
    sha256: str = ""
    examples: int = 0
    stats: dict[str, Any] = {}
    error_count: int = 0
    errors: list[RecordError] = []


class DatasetPreview(APIObject):
    object: str = "dataset.preview"
    dataset_id: str
    data: list[dict[str, Any]]


class Screening(APIObject):
    id: str
    object: str = "screening"
    created_at: int
    dataset_id: str
    alignment_dataset_id: str
    status: str
    stage: str | None = None
    progress: float = 0.0
    attempts: int = 0
    risk_score: float | None = None
    tier: str | None = None
    error: dict[str, Any] | None = None
    params: dict[str, Any] = {}
    started_at: int | None = None
    finished_at: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class Event(APIObject):
    id: int
    object: str = "event"
    created_at: int
    level: str
    type: str
    message: str
    data: dict[str, Any] = {}


class Report(APIObject):
    object: str = "screening.report"
    screening_id: str
    created_at: int
    redacted: bool = False
    report: dict[str, Any]


class Audit(APIObject):
    object: str = "screening.audit"
    screening_id: str
    audit: dict[str, Any]


class Score(APIObject):
    """One example's scores (`record` is 1-based); the other fields depend on the side."""

    record: int


class Stage(APIObject):
    name: str
    status: str
    attempts: int = 0
    progress: float = 0.0
    detail: dict[str, Any] = {}
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: int | None = None
    finished_at: int | None = None


class Experiment(APIObject):
    id: str
    object: str = "experiment"
    created_at: int
    name: str | None = None
    comparison_id: str | None = None
    status: str
    stage: str | None = None
    progress: float = 0.0
    dataset_id: str
    alignment_dataset_id: str | None = None
    eval_dataset_id: str | None = None
    params: dict[str, Any] = {}
    stages: list[Stage] = []
    results: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: int | None = None
    finished_at: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class Comparison(APIObject):
    id: str
    object: str = "comparison"
    created_at: int
    name: str | None = None
    dataset_id: str
    status: str
    params: dict[str, Any] = {}
    experiments: dict[str, str] = {}
    table: list[dict[str, Any]] = []
    differences: list[dict[str, Any]] = []


class Ranking(APIObject):
    id: str
    object: str = "ranking"
    created_at: int
    dataset_id: str
    status: str
    candidates: list[dict[str, Any]] = []
    recommendation: dict[str, Any] | None = None


class Calibration(APIObject):
    id: str
    object: str = "calibration"
    created_at: int
    scope: str
    metric: str
    experiments: int
    spearman: float | None = None
    fit: dict[str, Any] = {}


class Model(APIObject):
    id: str
    object: str = "model"
    bundled: bool = False
    default_for: list[str] = []


class Tenant(APIObject):
    id: str
    object: str = "tenant"
    name: str
    created_at: int


class ApiKey(APIObject):
    id: str
    object: str = "api_key"
    tenant_id: str
    name: str = ""
    prefix: str = ""
    role: str
    scopes: list[str] = []
    created_at: int
    revoked_at: int | None = None
    key: str | None = None  # the secret: only in the answer that created it


class Policy(APIObject):
    object: str = "policy"
    id: str
    name: str
    version: int
    created_at: int
    description: str = ""
    rules: list[dict[str, Any]] = []
    row_threshold: float
    otherwise: str
    builtin: bool = False


class FlaggedRow(APIObject):
    record_number: int
    line: int | None = None
    row_score: float
    parts: dict[str, float] = {}
    nearest_alignment: list[dict[str, Any]] = []
    nearest_harmful_anchor: dict[str, Any] | None = None
    record: Any = None


class Flagged(APIObject):
    total: int
    row_threshold: float
    has_more: bool = False
    data: list[FlaggedRow]


class WebhookEndpoint(APIObject):
    object: str = "webhook_endpoint"
    id: str
    created_at: int
    url: str
    events: list[str]
    description: str = ""
    secret: str | None = None  # the `whsec_` secret: only in the answers to create and rotate_secret


class WebhookDelivery(APIObject):
    object: str = "webhook_delivery"
    id: str
    endpoint_id: str
    created_at: int
    event_type: str
    status: str
    attempts: int = 0
    next_attempt_at: float | None = None
    delivered_at: int | None = None
    payload: dict[str, Any] = {}
    log: list[dict[str, Any]] = []
