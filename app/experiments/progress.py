"""An experiment's overall progress bar: each stage's share is its expected time, not a fixed fraction.

Expected time = the request's own units of work for the stage (from `limits.estimate`, stored in the
experiment's params) x the seconds per unit measured on the tenant's own finished stages (the median of the
last 50 of each stage; only their timings are read). Before a stage has been measured, the rate is the one
the validation study measured on a 2-core CPU (SmolLM2-135M, LoRA, fp32; studies/validation.py): a fine-tune
example ~2 s, an answered prompt ~0.05 s per new token, which is why generation, not training, takes most of
a CPU experiment. A stage that does no work (no alignment stage in a fine-tune-only run) gets no share.
"""

from __future__ import annotations

import threading
import time
from statistics import median
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.experiments.judge_kinds import any_remote
from app.models import Experiment, ExperimentStage

STAGES = ("select", "align", "finetune", "generate", "judge", "summarise")
# Seconds per unit (see units()), measured by the validation study on a 2-core CPU.
PRIOR_RATES = {
    "select": 0.07,
    "align": 2.0,
    "finetune": 2.0,
    "generate": 0.05,
    "judge": 0.002,
    "summarise": 1.0,
}
LLM_JUDGE_RATE = 1.0  # seconds per judged answer through an external judge, before one is measured
_TTL_S = 300.0
_cache: dict[str, tuple[float, dict[str, float]]] = {}
_lock = threading.Lock()


def units(params: dict[str, Any]) -> dict[str, float]:
    """The work of each stage in its own unit: examples (select), example-epochs (training), new tokens of
    every answer at every checkpoint (generate), answers (judge)."""
    est = params.get("estimate") or {}
    answers = float(est.get("prompts", 0) * est.get("checkpoints", 1))
    align_epochs = (params.get("alignment_training") or {}).get("epochs", 1)
    new_tokens = (params.get("generation") or {}).get("max_new_tokens", 128)
    return {
        "select": float(est.get("alignment_examples", 0) + est.get("finetune_examples", 0)),
        "align": float(est.get("alignment_examples", 0) * align_epochs),
        "finetune": float(est.get("finetune_examples", 0) * (params.get("training") or {}).get("epochs", 1)),
        "generate": answers * new_tokens,
        "judge": answers,
        "summarise": 1.0,
    }


def measured_rates(session: Session, tenant_id: str) -> dict[str, float]:
    """Median seconds per unit of each stage over the tenant's last 50 succeeded ones (kept 5 minutes)."""
    with _lock:
        hit = _cache.get(tenant_id)
        if hit and time.monotonic() - hit[0] < _TTL_S:
            return hit[1]
    rows = session.execute(
        select(ExperimentStage.name, ExperimentStage.result, Experiment.params)
        .join(Experiment, Experiment.id == ExperimentStage.experiment_id)
        .where(Experiment.tenant_id == tenant_id, ExperimentStage.status == "succeeded")
        .order_by(ExperimentStage.finished_at.desc())
        .limit(50 * len(STAGES))
    ).all()
    seen: dict[str, list[float]] = {}
    for name, result, params in rows:
        seconds, work = (result or {}).get("seconds"), units(params or {}).get(name, 0.0)
        if isinstance(seconds, int | float) and work > 0 and len(seen.get(name, [])) < 50:
            seen.setdefault(name, []).append(float(seconds) / work)
    rates = {name: median(v) for name, v in seen.items()}
    with _lock:
        _cache[tenant_id] = (time.monotonic(), rates)
    return rates


def weights(params: dict[str, Any], rates: dict[str, float]) -> dict[str, float]:
    """Each stage's share of the bar (sums to 1)."""
    llm = any_remote(params.get("judges")) > 0
    prior = {**PRIOR_RATES, **({"judge": LLM_JUDGE_RATE} if llm else {})}
    work = units(params)
    expected = {s: work[s] * rates.get(s, prior[s]) for s in STAGES}
    total = sum(expected.values())
    if total <= 0:
        return {s: 1.0 / len(STAGES) for s in STAGES}
    return {s: v / total for s, v in expected.items()}


def overall(weights_: dict[str, float], stage_name: str, fraction: float) -> float:
    """The bar at `fraction` of `stage_name`: the shares of the stages before it plus that part of its own."""
    done = sum(weights_[s] for s in STAGES[: STAGES.index(stage_name)])
    return round(min(done + weights_[stage_name] * min(max(fraction, 0.0), 1.0), 1.0), 4)


def of(session: Session, exp: Experiment, stage_name: str, fraction: float) -> float:
    params = exp.params or {}
    return overall(weights(params, measured_rates(session, exp.tenant_id)), stage_name, fraction)
