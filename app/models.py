"""SQL rows. Every row a tenant owns carries `tenant_id`; every service query filters by it."""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DEFAULT_TENANT = "default"


def new_id(prefix: str) -> str:
    """Time-ordered id: sorting by id sorts by creation, which makes cursor pagination a plain `id <`."""
    return f"{prefix}_{time.time_ns():016x}{os.urandom(5).hex()}"


def now() -> int:
    return int(time.time())


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Owned:
    """A row a tenant owns, and when it was written."""

    tenant_id: Mapped[str] = mapped_column(String(64), index=True, sort_order=-1)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now, sort_order=-1)


class Resource(Owned):
    """An owned row under its own time-ordered id (`new_id`)."""

    id: Mapped[str] = mapped_column(String(48), primary_key=True, sort_order=-2)


class RunTimes:
    """A run's error and times (a screening, a shard, an experiment, a stage): a running one whose
    heartbeat_at is older than `stale_after_s` has lost its worker."""

    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    heartbeat_at: Mapped[int | None] = mapped_column(BigInteger)


class Tenant(Base):
    """A provider (or a team of one). Every other row carries a tenant id; keys belong to one tenant."""

    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # a slug chosen by the admin
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class ApiKey(Base):
    """An API key, stored as the SHA-256 of the secret; `prefix` is a non-secret handle for display."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # admin | member
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class IdempotencyRecord(Base):
    """The first result of a POST sent with an Idempotency-Key, replayed to its retries."""

    __tablename__ = "idempotency_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # method, path and body of the first request
    state: Mapped[str] = mapped_column(String(16))  # in_progress | done
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now, index=True)

    __table_args__ = (UniqueConstraint("tenant_id", "key", name="uq_idempotency_tenant_key"),)


class Dataset(Resource, Base):
    __tablename__ = "datasets"
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # validating | ready | invalid
    container: Mapped[str | None] = mapped_column(String(16))
    format: Mapped[str | None] = mapped_column(String(32))
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    examples: Mapped[int] = mapped_column(Integer, default=0)
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    errors: Mapped[list[Any]] = mapped_column(default=list)
    error_count: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_datasets_tenant_purpose", "tenant_id", "purpose", "id"),)


class Screening(Resource, RunTimes, Base):
    __tablename__ = "screenings"
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    alignment_dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued|running|succeeded|failed|cancelled
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stage: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    risk_score: Mapped[float | None] = mapped_column(Float)
    tier: Mapped[str | None] = mapped_column(String(16), index=True)
    # The RQ job that owns this screening now; a job holding another id is stale and must not run.
    job_id: Mapped[str | None] = mapped_column(String(96))
    # Policy decision (migration 0007w): the policy asked for (None: the tenant's default), the version the
    # decision was made under, approve|review|reject, and the rule that fired (app.policies.decide).
    policy: Mapped[str | None] = mapped_column(String(64))
    policy_version: Mapped[int | None] = mapped_column(Integer)
    decision: Mapped[str | None] = mapped_column(String(16), index=True)
    decision_rule: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_screenings_tenant_status", "tenant_id", "status"),)

    @property
    def baseline(self) -> dict[str, Any] | None:
        """The screening this one re-screens a variant of (`app.screenings.variants.rescreen`), with that
        screening's risk: kept in `params`, so no column and no migration."""
        value = (self.params or {}).get("baseline")
        return value if isinstance(value, dict) else None


class ScreeningShard(RunTimes, Base):
    """One slice of a sharded screening's customer rows (migration 0008): a run of its own on any worker,
    claimed by compare-and-set on `job_id` like a screening, alive while its heartbeat is fresh."""

    __tablename__ = "screening_shards"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "<screening id>-<index>"
    screening_id: Mapped[str] = mapped_column(ForeignKey("screenings.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    index: Mapped[int] = mapped_column(Integer)
    start: Mapped[int] = mapped_column(Integer)  # first customer row (0-based), a multiple of the block size
    stop: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued|running|succeeded|failed|cancelled
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[str | None] = mapped_column(String(96))
    # the comparison's metadata and the stage seconds of the shard (numbers: the arrays are in its blob)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Ranking(Resource, Base):
    """Candidate ranking: one customer dataset screened against several candidate models' alignment sets."""

    __tablename__ = "rankings"
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    candidates: Mapped[list[Any]] = mapped_column()  # [{"name", "screening_id"}]


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(48))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    level: Mapped[str] = mapped_column(String(8), default="info")
    type: Mapped[str] = mapped_column(String(48))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_events_object", "object_id", "id"),)


class Report(Owned, Base):
    __tablename__ = "reports"
    screening_id: Mapped[str] = mapped_column(
        ForeignKey("screenings.id", ondelete="CASCADE"), primary_key=True
    )
    body: Mapped[dict[str, Any]] = mapped_column()
    scores_key: Mapped[str] = mapped_column(String(255))  # blob: per-example arrays (.npz, no pickles)


class Comparison(Resource, Base):
    """One request that runs the High-Sim, Low-Sim and Random variants of one experiment."""

    __tablename__ = "comparisons"
    name: Mapped[str | None] = mapped_column(String(200))
    dataset_id: Mapped[str] = mapped_column(String(48), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Experiment(Resource, RunTimes, Base):
    """Align, fine-tune, generate, judge. Dataset ids are kept without a foreign key: results (and the
    calibration points built from them) outlive the datasets, whose sha256s stay in `params`."""

    __tablename__ = "experiments"
    name: Mapped[str | None] = mapped_column(String(200))
    comparison_id: Mapped[str | None] = mapped_column(String(48), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued|running|succeeded|failed|cancelled
    stage: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    dataset_id: Mapped[str] = mapped_column(String(48), index=True)
    alignment_dataset_id: Mapped[str | None] = mapped_column(String(48), index=True)
    eval_dataset_id: Mapped[str | None] = mapped_column(String(48))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ExperimentStage(RunTimes, Base):
    """One stage of an experiment: its state, attempts, heartbeat and the artefact it left in the blob store.

    SQL, not Redis, is the record of how far an experiment got: a restarted worker (or a rebuilt queue)
    resumes from the first stage that has not succeeded.
    """

    __tablename__ = "experiment_stages"
    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # pending|queued|running|succeeded|failed|cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)  # step, total_steps, loss, eta_s, ...
    artefact_key: Mapped[str | None] = mapped_column(String(255))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class CalibrationPoint(Owned, Base):
    """What one finished experiment teaches the risk score: its screening features and measured harm."""

    __tablename__ = "calibration_points"
    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(String(600))  # representation "backend|model" the risk was read in
    risk_score: Mapped[float] = mapped_column(Float)
    harmfulness: Mapped[float] = mapped_column(Float)
    metric: Mapped[str] = mapped_column(String(64))
    features: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_calibration_points_scope", "tenant_id", "scope"),)


class Calibration(Resource, Base):
    """A monotone fit from risk score to measured harmfulness; the newest per (tenant, scope) is in force."""

    __tablename__ = "calibrations"
    scope: Mapped[str] = mapped_column(String(600))
    metric: Mapped[str] = mapped_column(String(64))
    experiments: Mapped[int] = mapped_column(Integer)
    spearman: Mapped[float | None] = mapped_column(Float)
    fit: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_calibrations_scope", "tenant_id", "scope", "id"),)


# ---------------------------------------------------------------- quotas and blob lifetime (migration 0005q)


class TenantUsage(Base):
    """What a tenant has started per UTC day, charged when an experiment is accepted (a deleted experiment
    is not refunded): the daily quotas read it."""

    __tablename__ = "tenant_usage"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True)  # unix time // 86400
    judge_calls: Mapped[int] = mapped_column(BigInteger, default=0)
    compute_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class UploadLease(Base):
    """One upload being validated: at most `max_concurrent_uploads` per tenant. A lease whose process died
    is freed after `upload_lease_s`."""

    __tablename__ = "upload_leases"
    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[int] = mapped_column(BigInteger, default=now)


class BlobLock(Base):
    """A row per shared (content-addressed) blob, written first by every transaction that places the blob
    or removes it: the row lock (PostgreSQL) or the write lock (SQLite) makes "place the bytes and commit
    a dataset row" and "re-check that no row uses them and delete" exclude each other."""

    __tablename__ = "blob_locks"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    touched_at: Mapped[int] = mapped_column(BigInteger, default=now)


# ---------------------------------------------------------------- policies and webhooks (migration 0007w)


class Policy(Resource, Base):
    """One version of a tenant's named policy: a new version is a new row, so a screening's decision keeps
    pointing at the rules it was judged under."""

    __tablename__ = "policies"
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[dict[str, Any]] = mapped_column()  # rules, row_threshold, otherwise
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (UniqueConstraint("tenant_id", "name", "version", name="uq_policies_name_version"),)


class WebhookEndpoint(Resource, Base):
    """A tenant's receiver. The secret signs every delivery (Standard Webhooks); after a rotation the
    previous one also signs until `previous_expires_at`, so receivers can switch without losing messages."""

    __tablename__ = "webhook_endpoints"
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[Any]] = mapped_column(default=list)
    description: Mapped[str] = mapped_column(String(500), default="")
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_expires_at: Mapped[int | None] = mapped_column(BigInteger)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)


class WebhookDelivery(Resource, Base):
    """The outbox: one message to one endpoint, written in the transaction of the state change it reports.
    Its id is the `webhook-id` of every attempt (receivers deduplicate on it); `log` keeps each attempt."""

    __tablename__ = "webhook_deliveries"
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(48))
    payload: Mapped[str] = mapped_column(Text)  # the exact JSON bytes signed and sent
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    delivered_at: Mapped[int | None] = mapped_column(BigInteger)
    log: Mapped[list[Any]] = mapped_column(default=list)

    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)
