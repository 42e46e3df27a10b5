"""The service's vocabulary, one home each: run statuses, dataset purposes, risk tiers and event types. Each
is a StrEnum, so a member is the very string SQL stores and the API shows (`Status.QUEUED == "queued"`)."""

from __future__ import annotations

from enum import StrEnum, auto
from typing import TYPE_CHECKING, Literal, TypeAlias, get_args


class Status(StrEnum):
    """Of every run: a screening, a shard of one, an experiment and each of its stages (`pending` is a
    stage's before it is due)."""

    PENDING = auto()
    QUEUED = auto()
    RUNNING = auto()
    SUCCEEDED = auto()
    FAILED = auto()
    CANCELLED = auto()


ACTIVE = (Status.QUEUED, Status.RUNNING)
TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


class Purpose(StrEnum):
    FINE_TUNE = "fine-tune"
    ALIGNMENT = "alignment"
    HARMFUL_ANCHORS = "harmful-anchors"
    SAFE_ANCHORS = "safe-anchors"
    EVAL_PROMPTS = "eval-prompts"


PURPOSES = tuple(Purpose)
# the provider's own sets: a tenant never reads their texts (app.access)
PRIVATE_PURPOSES = (Purpose.ALIGNMENT, Purpose.HARMFUL_ANCHORS, Purpose.SAFE_ANCHORS)


class Tier(StrEnum):
    LOW = auto()
    MEDIUM = auto()
    HIGH = auto()
    CRITICAL = auto()


# A policy's decisions, mildest first; how an augmented variant picks the alignment records it mixes in; a
# screening's alignment subsets (what a comparison aligns its variants on).
Decision = Literal["approve", "review", "reject"]
Selection = Literal["random", "nearest"]
Subset = Literal["high_sim", "low_sim", "random"]
DECISIONS: tuple[Decision, ...] = get_args(Decision)
SELECTIONS: tuple[Selection, ...] = get_args(Selection)
SUBSETS: tuple[Subset, ...] = get_args(Subset)

# (upper bound of the risk score, tier), lowest first
TIER_BOUNDS = ((25.0, Tier.LOW), (50.0, Tier.MEDIUM), (75.0, Tier.HIGH), (float("inf"), Tier.CRITICAL))

# The same vocabularies as the Literal types the API's fields and parameters take, so that OpenAPI shows each
# as an enum of strings: a job's status (a screening, an experiment; never `pending`), a stage's, a purpose
# and a tier. Type checkers see `str`.
if TYPE_CHECKING:
    JobStatus: TypeAlias = str
    StageStatus: TypeAlias = str
    PurposeName: TypeAlias = str
    TierName: TypeAlias = str
else:
    JobStatus = Literal[tuple(s.value for s in (*ACTIVE, *TERMINAL))]
    StageStatus = Literal[tuple(s.value for s in Status)]
    PurposeName = Literal[tuple(p.value for p in Purpose)]
    TierName = Literal[tuple(t.value for t in Tier)]


class EventType(StrEnum):
    """Every event a run records (`GET .../events`); the webhook-subscribable ones are `WEBHOOK_EVENTS`.
    A stage's own events are `stage_event(stage, StageEvent....)`."""

    SCREENING_QUEUED = "screening.queued"
    SCREENING_RUNNING = "screening.running"
    SCREENING_RETRYING = "screening.retrying"
    SCREENING_REQUEUED = "screening.requeued"
    SCREENING_SHARD_REQUEUED = "screening.shard_requeued"
    SCREENING_SHARDS_DONE = "screening.shards_done"
    SCREENING_SUCCEEDED = "screening.succeeded"
    SCREENING_FAILED = "screening.failed"
    SCREENING_CANCELLED = "screening.cancelled"
    EXPERIMENT_QUEUED = "experiment.queued"
    EXPERIMENT_RESUMED = "experiment.resumed"
    EXPERIMENT_SUCCEEDED = "experiment.succeeded"
    EXPERIMENT_FAILED = "experiment.failed"
    EXPERIMENT_CANCELLED = "experiment.cancelled"
    DECISION_MADE = "decision.made"


WEBHOOK_EVENTS = (
    EventType.SCREENING_SUCCEEDED,
    EventType.SCREENING_FAILED,
    EventType.SCREENING_CANCELLED,
    EventType.EXPERIMENT_SUCCEEDED,
    EventType.EXPERIMENT_FAILED,
    EventType.EXPERIMENT_CANCELLED,
    EventType.DECISION_MADE,
)


# What befalls a stage: the last word of its event names (`stage_event`), each member its lower-case name.
StageEvent = StrEnum("StageEvent", "STARTED PROGRESS SUCCEEDED RETRYING FAILED CANCELLED RECOVERED")


def stage_event(stage: str, kind: StageEvent) -> str:
    """`stage.<stage>.<kind>`: the same names for a screening's stages and an experiment's."""
    return f"stage.{stage}.{kind}"
