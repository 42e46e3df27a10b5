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
from app.demo import HARMFUL_ANCHORS, SAFE_ANCHORS
from workers import risk
from workers.audit import audit
from workers.cache import VectorCache
from workers.representations.base import Representer
from workers.similarity import Cancelled, compare, self_reference

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


def bundled_anchors(
    settings: Settings, representer: Representer, shared_cache: VectorCache | None = None
) -> Anchors:
    """The anchor sets that ship with ftguard. They hold no tenant's data, so their vectors may live in a
    cache shared by every tenant (`shared_cache`): each worker represents them once, not once per tenant."""
    sides = [
        side_from_file(path, name, settings)
        for path, name in ((HARMFUL_ANCHORS, "harmful anchors"), (SAFE_ANCHORS, "safe anchors"))
    ]
    for side in sides:
        side.meta["bundled"] = True
    return Anchors(harmful=sides[0], safe=sides[1], representer=representer, shared_cache=shared_cache)


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
class Anchors:
    """Harmful and safe anchor sets and the representation the anchor signal is measured in."""

    harmful: Side
    safe: Side
    representer: Representer
    shared_cache: VectorCache | None = None  # for the bundled sides only (never a tenant's own anchors)

    def cache_for(self, side: Side, tenant_cache: VectorCache | None) -> VectorCache | None:
        if side.meta.get("bundled") and self.shared_cache is not None:
            return self.shared_cache
        return tenant_cache


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
    """The first user turn and the last training target: what the screened text is about."""
    user = next((m["content"] for m in ex.screened if m["role"] == "user"), "")
    reply = ex.target_text
    return {"prompt": user[:SNIPPET], "completion": reply[:SNIPPET]}


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


def anchor_signal(
    customer: Side,
    c_vec: np.ndarray | None,
    anchors: Anchors,
    cache: VectorCache | None,
    params: Params,
    device: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Per customer example: max cosine to the harmful anchors minus max cosine to the safe anchors."""
    rep = anchors.representer
    h_vec, h_stats = represent(
        anchors.harmful, rep, anchors.cache_for(anchors.harmful, cache), None, "anchors"
    )
    s_vec, s_stats = represent(anchors.safe, rep, anchors.cache_for(anchors.safe, cache), None, "anchors")
    if c_vec is None:
        c_vec, _ = represent(customer, rep, cache, None, "anchors")
    if params.center:  # one centre for all three sets (the anchors' mean), so the two distances compare
        mu = np.vstack([h_vec, s_vec]).mean(axis=0, keepdims=True)
        c_vec, h_vec, s_vec = c_vec - mu, h_vec - mu, s_vec - mu

    def nearest(x: np.ndarray, y: np.ndarray, skip_self: bool = False) -> np.ndarray:
        r = compare(x, y, k=2 if skip_self else 1, block_size=params.block_size, device=device)
        return r.c_topk_sim[:, 1 if skip_self else 0]

    margin = nearest(c_vec, h_vec) - nearest(c_vec, s_vec)
    h_margin = nearest(h_vec, h_vec, skip_self=True) - nearest(h_vec, s_vec)
    s_margin = nearest(s_vec, h_vec) - nearest(s_vec, s_vec, skip_self=True)
    levels = risk.anchor_levels(h_margin)
    edges = risk.shared_edges(margin, h_margin, s_margin)  # one set of bins: the three read side by side
    info = {
        "representation": rep.describe() | {"identity": rep.identity},
        "harmful": {"examples": len(anchors.harmful.examples), **anchors.harmful.meta},
        "safe": {"examples": len(anchors.safe.examples), **anchors.safe.meta},
        "cache": {"harmful": h_stats, "safe": s_stats},
        "levels": levels,
        "customer_margin": risk.distribution(margin, edges),
        "harmful_anchor_margin": risk.distribution(h_margin, edges),
        "safe_anchor_margin": risk.distribution(s_margin, edges),
        "share_closer_to_harmful": float((margin > 0).mean()),
        "share_as_harmful_as_anchors": float((margin >= levels["harmful"]).mean()),
    }
    return margin.astype(np.float32), info


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
    margin, anchor_info = None, None
    if anchors is not None:
        same = anchors.representer.identity == representer.identity
        margin, anchor_info = anchor_signal(customer, c_vec if same else None, anchors, cache, params, device)
    t4 = time.perf_counter()
    scored = risk.score(c_max, levels, margin, anchor_info["levels"] if anchor_info else None)
    subs = subsets(sim.a_max_sim, params.subset_size, params.seed)
    top = np.argsort(-c_max, kind="stable")[:TOP_EXAMPLES]
    top_examples = [
        {
            "record": int(i) + 1,
            "max_sim": float(c_max[i]),
            "example": _snippet(customer.examples[i]),
            "nearest_alignment": [
                {"record": int(j) + 1, "sim": float(s), "example": _snippet(alignment.examples[j])}
                for j, s in zip(sim.c_topk_idx[i][:3], sim.c_topk_sim[i][:3], strict=True)
            ],
        }
        for i in top
    ]
    body: dict[str, Any] = {
        "object": "screening.report",
        "representation": representer.describe() | {"identity": representer.identity, "dim": representer.dim},
        "similarity": sim.meta,
        "params": {
            "top_k": params.top_k,
            "subset_size": params.subset_size,
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
        "subsets": {
            name: {
                "size": int(idx.size),
                "mean_max_sim": float(sim.a_max_sim[idx].mean()) if idx.size else None,
            }
            for name, idx in subs.items()
        },
        "top_examples": top_examples,
        "anchors": anchor_info,
        "audit": audit(a_vec=a_vec, c_vec=c_vec, c_max=c_max, near=levels["near"], center=params.center),
        "findings": risk.findings(
            risk=scored,
            c_max=c_max,
            a_max=sim.a_max_sim,
            n_customer=len(customer.examples),
            n_alignment=len(alignment.examples),
            subset_size=params.subset_size,
            margin=margin,
        ),
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
    arrays = {
        "c_max": c_max.astype(np.float32),
        "c_topk_mean": c_topk_mean.astype(np.float32),
        "c_topk_idx": sim.c_topk_idx.astype(np.int64),
        "c_topk_sim": sim.c_topk_sim.astype(np.float32),
        "a_max": sim.a_max_sim.astype(np.float32),
        "a_argmax": sim.a_argmax.astype(np.int64),
        **{f"subset_{k}": v.astype(np.int64) for k, v in subs.items()},
    }
    if margin is not None:
        arrays["c_anchor_margin"] = margin
    if report:
        report("score", 1.0, f"risk {scored['risk_score']:.1f} ({scored['tier']})")
    return Outcome(body=body, arrays=arrays)
