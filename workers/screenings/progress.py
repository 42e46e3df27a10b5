"""One progress bar for a screening, over parts weighted by the time each is expected to take.

Why: a fixed share per stage was wrong by an order of magnitude. In a default screening the harmful-anchor
stage runs SmolLM2 (about ten times MiniLM's compute per token, and twice its context) over the whole
customer set, yet had no share at all: the bar sat at 97% for minutes. So every part of the work (one
representation pass, one batch of comparisons, the report) is planned before any starts, with an estimate
of its seconds:

    seconds = units x (seconds per unit)

* units: a representation pass counts the tokens it will compute (cache misses only, deduplicated; about
  4 characters a token, cut at the model's max length); a comparison counts multiply-adds
  (n_c x n_a x dim); the report counts the audit's n x dim^2.
* seconds per unit: what this process measured on its last parts of the same kind (the same model on the
  same device for a representation pass; an exponential average, so one outlier moves it half way). Until
  a kind has been measured, its prior is its FLOPs over one nominal rate (`PRIOR_FLOPS`): 2 x the model's
  non-embedding parameters per token (the forward pass of a transformer), 2 per multiply-add. Only
  ratios matter for the weights, so the nominal rate cancels out as long as nothing is measured yet.

A part's weight is fixed when the plan starts, and a part's done share only grows, so the fraction never
goes back. Parts that turn up later (none should) get no weight. Every report is also the cancellation
check: the reporter returns False and the plan raises `Cancelled` (workers.screenings.similarity), the one
exception a job treats as "stop, write nothing"."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app.core.errors import Cancelled

PRIOR_FLOPS = 2e10  # nominal FLOP/s of an unmeasured kind of part; cancels out of the weights until measured
CHARS_PER_TOKEN = 4
DEFAULT_PARAMS = 1e8  # non-embedding parameters of a representer whose model cannot be read
EVERY_S = 1.0  # reports (each a SQL write for a job) at most this often, except at a part's start and end


@dataclass(frozen=True)
class Tick:
    stage: str
    fraction: float  # of the whole screening; never lower than the previous tick's
    stage_fraction: float  # of this stage
    message: str | None = None


Reporter = Callable[[Tick], bool]  # returns False to stop (the screening was cancelled or handed over)

_rates: dict[str, float] = {}  # kind of part -> measured seconds per unit, in this process
_rates_lock = threading.Lock()
_flops: dict[str, float] = {}


def rate(kind: str, prior: float) -> float:
    with _rates_lock:
        return _rates.get(kind, prior)


def measured(kind: str) -> float | None:
    with _rates_lock:
        return _rates.get(kind)


def record(kind: str, units: float, seconds: float) -> None:
    """One measurement: too short a part (under 50 ms) says more about overheads than about the rate."""
    if units <= 0 or seconds < 0.05:
        return
    new = seconds / units
    with _rates_lock:
        old = _rates.get(kind)
        _rates[kind] = new if old is None else 0.5 * old + 0.5 * new


def flops_per_token(rep: Any) -> float:
    """2 x the non-embedding parameters of the representer's model (an embedding is a lookup, no FLOPs),
    times the share of its blocks a pass runs (a causal-LM view that stops at a middle layer)."""
    ident = str(getattr(rep, "identity", id(rep)))
    if ident not in _flops:
        params = DEFAULT_PARAMS
        model = getattr(rep, "body", None) or getattr(rep, "model", None)
        try:
            import torch

            if isinstance(model, torch.nn.Module):
                emb = sum(
                    p.numel()
                    for m in model.modules()
                    if isinstance(m, torch.nn.Embedding)
                    for p in m.parameters(recurse=False)
                )
                params = max(float(sum(p.numel() for p in model.parameters()) - emb), 1.0)
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        blocks, n_layers = getattr(rep, "block", None), getattr(rep, "n_layers", None)
        if blocks is not None and n_layers:  # a pass that stops at a middle layer runs that share of blocks
            params *= max(int(blocks), 1) / int(n_layers)
        _flops[ident] = 2.0 * params
    return _flops[ident]


def encode_kind(rep: Any) -> str:
    d = rep.describe()
    return f"encode|{rep.backend}|{d.get('model')}|{d.get('device')}"


def tokens(examples: Sequence[Any], rep: Any) -> float:
    cap = int(getattr(rep, "max_length", 0) or 0) or 512
    return float(sum(min(len(ex.text) // CHARS_PER_TOKEN + 8, cap) for ex in examples))


@dataclass
class Part:
    stage: str
    kind: str
    units: float
    prior: float  # seconds per unit until `kind` is measured
    weight: float = 0.0
    done: float = 0.0
    started: float | None = None


class Plan:
    def __init__(self, report: Reporter | None, every_s: float | None = None) -> None:
        self.report = report
        self.every_s = EVERY_S if every_s is None else every_s
        self.parts: list[Part] = []
        self.frozen = False
        self.fraction = 0.0
        self._last = 0.0
        # representations whose vectors a pass of this plan stored (workers.screenings.screening looks again
        # for them)
        self.stored: set[str] = set()

    def add(self, stage: str, kind: str, units: float, prior: float) -> Part:
        part = Part(stage=stage, kind=kind, units=max(float(units), 0.0), prior=prior)
        self.parts.append(part)
        return part

    def encode_part(self, stage: str, rep: Any, examples: Sequence[Any]) -> Part:
        return self.add(stage, encode_kind(rep), tokens(examples, rep), flops_per_token(rep) / PRIOR_FLOPS)

    def compare_part(self, stage: str, multiply_adds: float, device: str) -> Part:
        return self.add(stage, f"compare|{device}", multiply_adds, 2.0 / PRIOR_FLOPS)

    def _freeze(self) -> None:
        if self.frozen:
            return
        self.frozen = True
        for p in self.parts:
            p.weight = p.units * rate(p.kind, p.prior)

    def weights(self) -> dict[str, float]:
        """Each stage's share of the whole (what the bar gives it), for reports and tests."""
        self._freeze()
        total = sum(p.weight for p in self.parts) or 1.0
        out: dict[str, float] = {}
        for p in self.parts:
            out[p.stage] = out.get(p.stage, 0.0) + p.weight / total
        return out

    def start(self, part: Part, message: str | None = None) -> None:
        part.started = time.perf_counter()
        self._emit(part, message, force=True)

    def advance(self, part: Part, done: float) -> None:
        part.done = max(part.done, min(max(done, 0.0), 1.0))
        self._emit(part, None, force=False)

    def finish(self, part: Part, message: str | None = None) -> None:
        if part.started is not None:  # it ran (a pass served from the cache never starts)
            record(part.kind, part.units, time.perf_counter() - part.started)
            part.started = None
        part.done = 1.0
        self._emit(part, message, force=True)

    def _emit(self, part: Part, message: str | None, *, force: bool) -> None:
        self._freeze()
        total = sum(p.weight for p in self.parts)
        if total > 0:
            frac = sum(p.weight * p.done for p in self.parts) / total
        else:  # nothing to compute at all (every vector cached): count parts
            frac = sum(p.done for p in self.parts) / max(len(self.parts), 1)
        self.fraction = max(self.fraction, min(frac, 1.0))
        now = time.monotonic()
        if self.report is None or (not force and now - self._last < self.every_s):
            return
        self._last = now
        mine = [p for p in self.parts if p.stage == part.stage]
        w = sum(p.weight for p in mine)
        stage_frac = (
            sum(p.weight * p.done for p in mine) / w if w > 0 else sum(p.done for p in mine) / len(mine)
        )
        if not self.report(Tick(part.stage, round(self.fraction, 4), round(stage_frac, 4), message)):
            raise Cancelled()
