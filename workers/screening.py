"""The screening computation: represent both sets (cached), compare in blocks, score, build the report.

`screen()` is plain: it takes examples and a backend and returns the report body and the per-example
arrays. The RQ job (workers.jobs) and the local CLI both call it; only they touch SQL, blobs and files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.core.config import Settings
from app.datasets.formats import Example
from app.datasets.service import read_file
from app.datasets.validate import training_summary
from app.screenings import explain
from workers import anchors as anchor_forms
from workers import findings as finding_rules
from workers import risk
from workers.anchors import Anchors, bundled_anchors
from workers.audit import audit
from workers.cache import VectorCache
from workers.representations.base import Representer
from workers.similarity import Cancelled, compare, self_reference

__all__ = ["Anchors", "Params", "Side", "bundled_anchors", "screen", "side_from_file"]

# stage, fraction of the whole screening, optional message; returns False to stop (cancelled)
Reporter = Callable[[str, float, str | None], bool]
STAGES = {
    "anchors": (0.97, 0.97),
    "represent_alignment": (0.0, 0.45),
    "represent_customer": (0.45, 0.9),
    "compare": (0.9, 0.97),
    "score": (0.97, 1.0),
}
SNIPPET = 300
TOP_EXAMPLES = 10


@dataclass
class Side:
    """One dataset as the screening sees it."""

    name: str
    examples: Sequence[Example]
    sha256: str
    records: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


def side_from_file(path: Path, name: str, settings: Settings) -> Side:
    """A local file (the CLI's inputs, the bundled demo and anchor sets) as a screening side."""
    rep, examples = read_file(path=path, settings=settings)
    return Side(
        name=name, examples=examples, sha256=rep.sha256, meta={"filename": path.name, "format": rep.format}
    )


@dataclass
class Params:
    top_k: int = 5
    subset_size: int = 100
    seed: int = 0
    center: bool = False
    block_size: int = 4096
    method: str = "exact"
    faiss_threshold: int = 200_000

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Params:
        keys = ("top_k", "subset_size", "seed", "center", "block_size", "method", "faiss_threshold")
        return cls(**{k: d[k] for k in keys if k in d})


@dataclass
class Outcome:
    body: dict[str, Any]
    arrays: dict[str, np.ndarray]


def _stage_reporter(report: Reporter | None, stage: str) -> Callable[[float], None]:
    lo, hi = STAGES[stage]
    last = [0.0]

    def cb(frac: float) -> None:
        now = time.monotonic()
        if report and (now - last[0] > 1.0 or frac >= 1.0):
            last[0] = now
            if not report(stage, lo + (hi - lo) * frac, None):
                raise Cancelled()

    return cb


def represent(
    side: Side, representer: Representer, cache: VectorCache | None, report: Reporter | None, stage: str
) -> tuple[np.ndarray, dict[str, int]]:
    """Vectors of one side. Cached examples (by content hash) and duplicates are represented once."""
    n = len(side.examples)
    hashes = [ex.content_hash for ex in side.examples]
    if cache is not None:
        vecs, missing = cache.lookup(representer.identity, side.sha256, hashes, representer.dim)
    else:
        vecs, missing = np.zeros((n, representer.dim), dtype=np.float32), np.ones(n, dtype=bool)
    first: dict[str, int] = {}
    for i in np.flatnonzero(missing):
        first.setdefault(hashes[i], int(i))
    todo = list(first.values())
    stats = {"examples": n, "from_cache": int(n - missing.sum()), "computed": len(todo)}
    if not todo:
        if report:
            report(stage, STAGES[stage][1], f"{side.name}: {n} vectors from cache")
        return vecs, stats
    msg = f"{side.name}: representing {len(todo)} of {n} examples with {representer.backend}"
    if report and not report(stage, STAGES[stage][0], msg):
        raise Cancelled()
    cb = _stage_reporter(report, stage)
    done = [0]

    def tick(k: int) -> None:
        done[0] += k
        cb(done[0] / len(todo))

    new = representer.encode([side.examples[i] for i in todo], progress=tick)
    row = {hashes[i]: j for j, i in enumerate(todo)}
    fill = np.flatnonzero(missing)
    vecs[fill] = new[[row[hashes[i]] for i in fill]]
    if cache is not None:
        cache.store_vectors(representer.identity, side.sha256, hashes, vecs)
    return vecs, stats


def _snippet(ex: Example) -> dict[str, str]:
    """The system prompt, the first user turn and the last training target: what the screened text is
    about."""
    system = next((m["content"] for m in ex.screened if m["role"] == "system"), "")
    user = next((m["content"] for m in ex.screened if m["role"] == "user"), "")
    reply = ex.target_text
    out = {"prompt": user[:SNIPPET], "completion": reply[:SNIPPET]}
    if system.strip():
        out["system"] = system.strip()[:SNIPPET]
    return out


def subset_size_for(size: int, n_alignment: int) -> tuple[int, str | None]:
    """The subset size used, and a warning when the one asked for is not under half the alignment set:
    from there High-Sim and Low-Sim share records (at the full size they are the same set)."""
    limit = max((n_alignment - 1) // 2, 0)
    if size <= limit:
        return size, None
    return limit, (
        f"subset_size {size} is not under half of the alignment set ({n_alignment} examples): High-Sim and "
        f"Low-Sim would share records, so each subset was clamped to {limit} examples."
    )


def subsets(a_max: np.ndarray, size: int, seed: int) -> dict[str, np.ndarray]:
    """High-Sim (top N by max cosine to the customer set), Low-Sim (bottom N) and a seeded Random N."""
    n = min(size, a_max.size)
    order = np.argsort(-a_max, kind="stable")
    rng = np.random.default_rng(seed)
    return {
        "high_sim": order[:n],
        "low_sim": order[::-1][:n],
        "random": np.sort(rng.choice(a_max.size, size=n, replace=False)),
    }


def _drivers(
    *,
    customer: Side,
    alignment: Side,
    sim: Any,
    contrib: np.ndarray,
    parts: dict[str, np.ndarray],
    top_k: int,
    anchors: Anchors | None,
    per_form: dict[str, dict[str, np.ndarray]],
) -> list[dict[str, Any]]:
    """The examples with the largest contribution to the score, summed over all parts, each with its
    evidence: the nearest alignment examples (top_k) and, per anchor form, its nearest harmful and safe
    anchor (the form that counts in the score first)."""
    order = np.lexsort((np.arange(contrib.size), -sim.c_topk_sim[:, 0], -contrib))[:TOP_EXAMPLES]
    out = []
    for i in order:
        ev = []
        if anchors is not None:
            forms = sorted(anchors.forms, key=lambda f: -float(per_form[f.name]["zh"][i]))
            ev = [anchor_forms.evidence(f, per_form[f.name], int(i), _snippet) for f in forms]
        out.append(
            {
                "record": int(i) + 1,
                "max_sim": float(sim.c_topk_sim[i, 0]),
                "contribution": round(float(contrib[i]), 3),
                "contributions": {k: round(float(v[i]), 3) for k, v in parts.items()},
                "example": _snippet(customer.examples[i]),
                "nearest_alignment": [
                    {"record": int(j) + 1, "sim": float(s), "example": _snippet(alignment.examples[j])}
                    for j, s in zip(sim.c_topk_idx[i][:top_k], sim.c_topk_sim[i][:top_k], strict=True)
                ],
                "anchor_evidence": ev,
            }
        )
    return out


def screen(
    *,
    customer: Side,
    alignment: Side,
    representer: Representer,
    params: Params,
    cache: VectorCache | None = None,
    report: Reporter | None = None,
    device: str = "cpu",
    anchors: Anchors | None = None,
) -> Outcome:
    """Compare a customer dataset with an alignment set (and anchors, if given) and build the report."""
    t0 = time.perf_counter()
    a_vec, a_stats = represent(alignment, representer, cache, report, "represent_alignment")
    t1 = time.perf_counter()
    c_vec, c_stats = represent(customer, representer, cache, report, "represent_customer")
    t2 = time.perf_counter()
    if report and not report("compare", STAGES["compare"][0], "comparing in blocks"):
        raise Cancelled()
    sim = compare(
        c_vec,
        a_vec,
        k=params.top_k,
        block_size=params.block_size,
        center=params.center,
        device=device,
        method=params.method,
        faiss_threshold=params.faiss_threshold,
        progress=_stage_reporter(report, "compare"),
    )
    ref = self_reference(
        a_vec, sample=2000, seed=params.seed, center=params.center, block_size=params.block_size
    )
    t3 = time.perf_counter()
    c_max = sim.c_topk_sim[:, 0]
    c_topk_mean = sim.c_topk_sim.mean(axis=1)
    levels = risk.reference_levels(ref)
    per_form: dict[str, dict[str, np.ndarray]] = {}
    anchor_info: dict[str, Any] | None = None
    if anchors is not None:
        per_form, anchor_info = anchor_forms.signal(
            customer,
            c_vec,
            representer,
            anchors,
            cache,
            represent,
            params.center,
            params.block_size,
            device,
        )
    t4 = time.perf_counter()
    scored = risk.score(c_max, levels, {k: v["zh"] for k, v in per_form.items()} or None)
    if anchor_info is not None:
        anchor_info |= risk.anchor_summary(anchor_info["forms"], per_form, scored)
    size, subset_warning = subset_size_for(params.subset_size, len(alignment.examples))
    subs = subsets(sim.a_max_sim, size, params.seed)
    contrib, part_contrib = risk.contributions(
        c_max, levels, scored, {k: v["zh"] for k, v in per_form.items()}
    )
    subset_summary = {
        name: {
            "size": int(idx.size),
            "mean_max_sim": float(sim.a_max_sim[idx].mean()) if idx.size else None,
        }
        for name, idx in subs.items()
    }
    fired = finding_rules.findings(
        finding_rules.Ctx(
            risk=scored,
            c_max=c_max,
            a_max=sim.a_max_sim,
            n_customer=len(customer.examples),
            n_alignment=len(alignment.examples),
            subsets=subset_summary,
            subset_warning=subset_warning,
            forms=(anchor_info or {}).get("forms") or {},
        )
    )
    body: dict[str, Any] = {
        "object": "screening.report",
        "representation": representer.describe() | {"identity": representer.identity, "dim": representer.dim},
        "similarity": sim.meta,
        "params": {
            "top_k": params.top_k,
            "subset_size": params.subset_size,
            "subset_size_used": size,
            "seed": params.seed,
            "center": params.center,
        },
        "customer": {
            "examples": len(customer.examples),
            "sha256": customer.sha256,
            **customer.meta,
            "training": training_summary(customer.examples, customer.meta.get("format")),
        },
        "alignment": {"examples": len(alignment.examples), "sha256": alignment.sha256, **alignment.meta},
        "risk": scored,
        "distributions": {
            "customer_max_sim": risk.distribution(c_max),
            "customer_topk_mean_sim": risk.distribution(c_topk_mean),
            "alignment_max_sim": risk.distribution(sim.a_max_sim),
        },
        "reference": ref,
        "shares_above": {name: float((c_max >= v).mean()) for name, v in levels.items()},
        "subsets": subset_summary,
        "top_examples": _drivers(
            customer=customer,
            alignment=alignment,
            sim=sim,
            contrib=contrib,
            parts=part_contrib,
            top_k=params.top_k,
            anchors=anchors,
            per_form=per_form,
        ),
        "anchors": anchor_info,
        "audit": audit(a_vec=a_vec, c_vec=c_vec, c_max=c_max, near=levels["near"], center=params.center),
        "findings": [f["text"] for f in fired],
        "finding_rules": [f["rule"] for f in fired],
        "warnings": [subset_warning] if subset_warning else [],
        "timings_s": {
            "represent_alignment": round(t1 - t0, 3),
            "represent_customer": round(t2 - t1, 3),
            "compare": round(t3 - t2, 3),
            "anchors": round(t4 - t3, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
        "cache": {
            "alignment_hit": a_stats["computed"] == 0,
            "customer_hit": c_stats["computed"] == 0,
            "alignment": a_stats,
            "customer": c_stats,
        },
    }
    body["about"] = explain.about(body)
    arrays = {
        "c_max": c_max.astype(np.float32),
        "c_topk_mean": c_topk_mean.astype(np.float32),
        "c_topk_idx": sim.c_topk_idx.astype(np.int64),
        "c_topk_sim": sim.c_topk_sim.astype(np.float32),
        "a_max": sim.a_max_sim.astype(np.float32),
        "a_argmax": sim.a_argmax.astype(np.int64),
        "c_contribution": contrib.astype(np.float32),
        **{f"subset_{k}": v.astype(np.int64) for k, v in subs.items()},
    }
    if per_form:
        arrays["c_anchor_margin"] = risk.headline_margin(per_form, scored)
        for k, v in per_form.items():
            arrays[f"c_anchor_margin_{k}"] = v["margin"]
            arrays[f"c_anchor_zh_{k}"] = v["zh"].astype(np.float32)
            # the nearest harmful anchor of each row (the flagged rows name it; computed above anyway)
            arrays[f"c_anchor_harmful_idx_{k}"] = np.asarray(v["harmful_idx"], dtype=np.int64)
            arrays[f"c_anchor_harmful_sim_{k}"] = np.asarray(v["harmful_sim"], dtype=np.float32)
    if report:
        report("score", 1.0, f"risk {scored['risk_score']:.1f} ({scored['tier']})")
    return Outcome(body=body, arrays=arrays)
