"""Provider-set bounds on every numeric field of an experiment (or comparison) request, the compute and
judge-call estimate made at creation, and the per-tenant quotas checked against it.

Bounds live in settings (`experiment_max_*`, `max_subset_size`); the request schema keeps only absolute
ceilings. A request over a bound is a 400 `limit_exceeded` naming the field and the setting; a quota that
frees up with time (active experiments, active compute, the day's judge calls) is a 429 with Retry-After.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import quotas
from app.core.config import Settings
from app.core.errors import InvalidRequest, TooManyRequests
from app.core.vocab import ACTIVE
from app.experiments.judge_kinds import any_remote
from app.models import Experiment

ACTIVE_RETRY_AFTER_S = 30
TRAININGS = ("training", "alignment_training")
# (field under each training spec, settings attribute, "max" or "min")
TRAINING_BOUNDS = (
    ("epochs", "experiment_max_epochs", "max"),
    ("batch_size", "experiment_max_batch_size", "max"),
    ("max_length", "experiment_max_train_length", "max"),
    ("learning_rate", "experiment_max_learning_rate", "max"),
    ("learning_rate", "experiment_min_learning_rate", "min"),
    ("max_grad_norm", "experiment_max_grad_norm", "max"),
    ("lora.rank", "experiment_max_lora_rank", "max"),
    ("lora.alpha", "experiment_max_lora_alpha", "max"),
)
OTHER_BOUNDS = (
    ("alignment.size", "max_subset_size", "max"),
    ("fine_tune.max_examples", "experiment_max_finetune_examples", "max"),
    ("generation.max_new_tokens", "experiment_max_new_tokens", "max"),
    ("generation.batch_size", "experiment_max_generation_batch_size", "max"),
)


def _get(spec: dict[str, Any], path: str) -> Any:
    node: Any = spec
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _env(attr: str) -> str:
    return f"FTGUARD_{attr.upper()}"


def check_bounds(spec: dict[str, Any], settings: Settings) -> None:
    """400 `limit_exceeded` for the first numeric field outside the provider's bounds."""
    bounds = [(f"{t}.{f}", a, k) for t in TRAININGS if spec.get(t) for f, a, k in TRAINING_BOUNDS]
    for path, attr, kind in (*bounds, *OTHER_BOUNDS):
        value, limit = _get(spec, path), getattr(settings, attr)
        if value is None:
            continue
        if (kind == "max" and value > limit) or (kind == "min" and value < limit):
            word = "above the limit" if kind == "max" else "below the minimum"
            raise InvalidRequest(
                f"{path} is {value}, {word} of {limit} set by the provider ({_env(attr)})",
                param=path,
                code="limit_exceeded",
            )
    for t in TRAININGS:
        if (spec.get(t) or {}).get("method") == "full" and not settings.experiment_allow_full_training:
            raise InvalidRequest(
                "method 'full' is turned off by the provider (FTGUARD_EXPERIMENT_ALLOW_FULL_TRAINING); "
                "use 'lora'",
                param=f"{t}.method",
                code="limit_exceeded",
            )


@lru_cache
def bundled_prompts(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def _training_tokens(training: dict[str, Any], examples: int) -> int:
    """steps x batch x max_length: the tokens a training stage processes, padding included (an upper
    bound: shorter examples cost less)."""
    batch = int(training.get("batch_size", 8))
    steps = math.ceil(examples / batch) * int(training.get("epochs", 1))
    return steps * batch * int(training.get("max_length", 512))


def estimate(
    params: dict[str, Any], *, alignment_examples: int, finetune_examples: int, prompts: int
) -> dict[str, int]:
    """What an experiment will cost, estimated from its request and its datasets' sizes. A fine-tune-only
    experiment has no alignment stage; every evaluation checkpoint answers (and judges) every prompt."""
    a = params.get("alignment")
    n_align = 0
    if a is not None:
        n_align = alignment_examples if a["selection"] == "full" else min(a["size"], alignment_examples)
    n_ft = min(params["fine_tune"].get("max_examples") or finetune_examples, finetune_examples)
    gen = params["generation"]
    align_tokens = _training_tokens(params["alignment_training"], n_align) if a is not None else 0
    ft_tokens = _training_tokens(params["training"], n_ft)
    points = len((params.get("evaluation") or {}).get("checkpoints") or [1.0])
    generated = prompts * points * int(gen.get("max_new_tokens", 128))
    paid = any_remote(params["judges"])
    return {
        "alignment_examples": n_align,
        "finetune_examples": n_ft,
        "prompts": prompts,
        "checkpoints": points,
        "compute_tokens": align_tokens + ft_tokens + generated,
        "judge_calls": prompts * points * paid,
    }


def check_estimate(est: dict[str, int], settings: Settings) -> None:
    """400 when one experiment alone is over the provider's bounds of prompts or compute."""
    if est["prompts"] > settings.experiment_max_eval_prompts:
        raise InvalidRequest(
            f"the evaluation set has {est['prompts']} prompts, above the limit of "
            f"{settings.experiment_max_eval_prompts} ({_env('experiment_max_eval_prompts')})",
            param="evaluation.dataset_id",
            code="limit_exceeded",
        )
    if est["compute_tokens"] > settings.max_experiment_compute_tokens:
        raise InvalidRequest(
            f"this experiment would process about {est['compute_tokens']} tokens (steps x batch x "
            f"max_length of both training stages, plus the generated tokens), above the limit of "
            f"{settings.max_experiment_compute_tokens} ({_env('max_experiment_compute_tokens')}); use "
            "fewer epochs, examples or tokens",
            param="training",
            code="compute_limit_exceeded",
        )


def reserve(
    session: Session,
    settings: Settings,
    tenant_id: str,
    *,
    adding: list[dict[str, Any]],
    comparison: bool = False,
    judge_calls: int | None = None,
) -> None:
    """Check the tenant's quotas for `adding` more active experiments (their params, with `estimate`) and
    charge the day's usage; 429 when a quota is full. Runs under the tenant lock until the caller commits.
    `judge_calls` overrides the calls to charge (a resume whose judge stage already ran charges none)."""
    quotas.lock_tenant(session, tenant_id)
    active = list(
        session.scalars(
            select(Experiment).where(Experiment.tenant_id == tenant_id, Experiment.status.in_(ACTIVE))
        )
    )
    s = settings
    if len(active) + len(adding) > s.max_active_experiments:
        _refuse(
            session,
            f"{len(active)} experiments are queued or running and this adds {len(adding)}; at most "
            f"{s.max_active_experiments} may be at once per tenant",
            "too_many_active_experiments",
        )
    if comparison:
        running = session.scalar(
            select(func.count(func.distinct(Experiment.comparison_id))).where(
                Experiment.tenant_id == tenant_id,
                Experiment.status.in_(ACTIVE),
                Experiment.comparison_id.is_not(None),
            )
        )
        if (running or 0) + 1 > s.max_active_comparisons:
            _refuse(
                session,
                f"{running} comparisons are queued or running; at most {s.max_active_comparisons} may be "
                "at once per tenant",
                "too_many_active_comparisons",
            )
    cost = lambda p: int((p.get("estimate") or {}).get("compute_tokens", 0))  # noqa: E731
    busy = sum(cost(e.params) for e in active)
    new = sum(cost(p) for p in adding)
    if busy + new > s.max_active_compute_tokens:
        _refuse(
            session,
            f"the tenant's queued and running experiments hold about {busy} tokens of compute and this "
            f"adds {new}; at most {s.max_active_compute_tokens} may be at once",
            "compute_quota_exceeded",
        )
    calls = (
        judge_calls
        if judge_calls is not None
        else sum(int((p.get("estimate") or {}).get("judge_calls", 0)) for p in adding)
    )
    usage = quotas.usage_today(session, tenant_id)
    if calls and (usage.judge_calls or 0) + calls > s.max_judge_calls_per_day:
        session.rollback()
        raise TooManyRequests(
            f"the tenant has started {usage.judge_calls} llm judge calls today and this adds {calls}; at "
            f"most {s.max_judge_calls_per_day} per UTC day",
            retry_after=quotas.seconds_to_tomorrow(),
            code="judge_quota_exceeded",
        )
    usage.judge_calls = (usage.judge_calls or 0) + calls
    usage.compute_tokens = (usage.compute_tokens or 0) + new


def _refuse(session: Session, message: str, code: str) -> None:
    session.rollback()
    raise TooManyRequests(
        f"{message}; retry when some have finished (or cancel some)",
        retry_after=ACTIVE_RETRY_AFTER_S,
        code=code,
    )
