"""The screening computation: represent both sets (cached), compare in blocks, score, build the report.

`screen()` is plain: it takes examples and a backend and returns the report body and the per-example
arrays. The RQ job (workers.screenings.jobs) and the local CLI both call it; only they touch SQL, blobs and
files.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from app.core.config import Settings
from app.datasets.files import read_file
from app.datasets.formats import Example
from app.datasets.validate import training_summary
from app.screenings import explain
from app.screenings.scores import Arrays, form_array, subset_array
from workers.cache import VectorCache
from workers.representations.base import Representer
from workers.screenings import anchors as anchor_forms
from workers.screenings import findings as finding_rules
from workers.screenings import risk
from workers.screenings.anchors import Anchors, bundled_anchors
from workers.screenings.audit import audit, vendi_of_gram, vendi_score
from workers.screenings.progress import PRIOR_FLOPS, Plan, Reporter
from workers.screenings.rows import Rows, Shared, Work

__all__ = ["Anchors", "Params", "Reporter", "Side", "bundled_anchors", "screen", "side_from_file"]

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
        name=name,
        examples=examples,
        sha256=rep.sha256,
        meta={"filename": path.name, "format": rep.format, "container": rep.container},
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
    part_rows: int = (
        20_000  # the customer rows of one shard (rounded up to block_size): workers.screenings.rows
    )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Params:
        keys = ("top_k", "subset_size", "seed", "center", "block_size", "method", "faiss_threshold")
        return cls(**{k: d[k] for k in keys if k in d})

    def exact(self, n_alignment: int) -> bool:
        """Whether the comparison runs the exact method ("auto" picks it below `faiss_threshold`)."""
        return self.method == "exact" or (self.method == "auto" and n_alignment < self.faiss_threshold)

    def shardable(self, n_alignment: int) -> bool:
        """Whether a slice of the customer set screens as the whole would: the exact method, not centred
        (the centred customer audit needs every vector at once; faiss builds its index per run)."""
        return self.exact(n_alignment) and not self.center


@dataclass
class Outcome:
    body: dict[str, Any]
    arrays: dict[str, np.ndarray]


class Pass:
    """One representation pass of one side: its cache lookup first (so the plan knows what is left to
    compute), the encoding later. Cached examples (by content hash) and duplicates are represented once."""

    def __init__(
        self, stage: str, side: Side, representer: Representer, cache: VectorCache | None, plan: Plan
    ) -> None:
        self.stage, self.side, self.representer, self.cache, self.plan = stage, side, representer, cache, plan
        n = len(side.examples)
        self.hashes = [ex.content_hash for ex in side.examples]
        if cache is not None:
            self.vecs, self.missing = cache.lookup(
                representer.identity, side.sha256, self.hashes, representer.dim
            )
        else:
            self.vecs, self.missing = np.zeros((n, representer.dim), dtype=np.float32), np.ones(n, dtype=bool)
        self._todo()
        self.part = plan.encode_part(stage, representer, [side.examples[i] for i in self.todo])
        self.ran = False

    def _todo(self) -> None:
        first: dict[str, int] = {}
        for i in np.flatnonzero(self.missing):
            first.setdefault(self.hashes[i], int(i))
        self.todo = list(first.values())
        n = len(self.hashes)
        self.stats = {"examples": n, "from_cache": int(n - self.missing.sum()), "computed": len(self.todo)}

    def _recheck(self) -> None:
        """Look the missing examples up again: another pass of this screening in the same representation
        stored its vectors since (an example in both sets is represented once)."""
        assert self.cache is not None
        rep, miss = self.representer, np.flatnonzero(self.missing)
        vecs, still = self.cache.lookup(
            rep.identity, f"{self.side.sha256}:recheck", [self.hashes[i] for i in miss], rep.dim
        )
        self.vecs[miss[~still]] = vecs[~still]
        self.missing[miss[~still]] = False
        self._todo()

    def run(self) -> tuple[np.ndarray, dict[str, int]]:
        if self.ran:
            return self.vecs, self.stats
        side, rep, n = self.side, self.representer, len(self.side.examples)
        if self.todo and self.cache is not None and rep.identity in self.plan.stored:
            self._recheck()
        if not self.todo:
            self.plan.finish(self.part, f"{side.name}: {n} vectors from cache")
            self.ran = True
            return self.vecs, self.stats
        self.plan.start(
            self.part, f"{side.name}: representing {len(self.todo)} of {n} examples with {rep.backend}"
        )
        done = [0]

        def tick(k: int) -> None:
            done[0] += k
            self.plan.advance(self.part, done[0] / len(self.todo))

        new = rep.encode([side.examples[i] for i in self.todo], progress=tick)
        row = {self.hashes[i]: j for j, i in enumerate(self.todo)}
        fill = np.flatnonzero(self.missing)
        self.vecs[fill] = new[[row[self.hashes[i]] for i in fill]]
        if self.cache is not None:
            self.cache.store_vectors(rep.identity, side.sha256, self.hashes, self.vecs)
            self.plan.stored.add(rep.identity)
        self.plan.finish(self.part)
        self.ran = True
        return self.vecs, self.stats


def represent(
    side: Side, representer: Representer, cache: VectorCache | None, report: Reporter | None, stage: str
) -> tuple[np.ndarray, dict[str, int]]:
    """Vectors of one side, as a plan of its own (the whole bar is this pass)."""
    return Pass(stage, side, representer, cache, Plan(report)).run()


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
    rows: Rows | None = None,
) -> Outcome:
    """Compare a customer dataset with an alignment set (and anchors, if given) and build the report.

    `rows`, when given, are the customer rows' results already computed (a sharded screening's shards,
    joined: workers.screenings.rows); otherwise they are computed here, the same way.
    `report` gets a `workers.screenings.progress.Tick` at each part's start and end and at most every second
    between (per batch of a representation pass, per block of a comparison); it returns False to stop,
    and `Cancelled` is raised. The parts are weighed before any runs (workers.screenings.progress says
    how)."""
    t0 = time.perf_counter()
    plan = Plan(report)
    n_c, n_a, dim = len(customer.examples), len(alignment.examples), representer.dim
    shared = Shared(plan, alignment, representer, cache, anchors, params, device, reference=True)
    work = None
    if rows is None:
        work = Work(plan, customer, representer, cache, anchors, n_alignment=n_a, n_total=n_c, device=device)
    score_part = plan.add("score", "score", float(n_c + n_a) * dim * dim, 2.0 / PRIOR_FLOPS)
    a_vec, a_stats, ref = shared.alignment()
    t1 = time.perf_counter()
    c_vec = None
    if work is not None:
        rows, c_vec = work.run(a_vec, shared.references, params)
    refs = shared.references()
    assert rows is not None and ref is not None
    c_stats = rows.stats
    sim = SimpleNamespace(
        c_topk_sim=rows.c_topk_sim, c_topk_idx=rows.c_topk_idx, a_max_sim=rows.a_max, a_argmax=rows.a_argmax
    )
    if rows.gram is not None:
        c_vendi = vendi_of_gram(rows.gram, n_c)
    elif c_vec is not None:  # centred: the customer audit needs every vector at once (never sharded)
        c_vendi = vendi_score(c_vec, center=True)
    else:
        raise ValueError("centred screenings are not sharded: their rows carry no Gram matrix")
    c_max = sim.c_topk_sim[:, 0]
    c_topk_mean = sim.c_topk_sim.mean(axis=1)
    levels = risk.reference_levels(ref)
    per_form = rows.per_form
    anchor_info = anchor_forms.info(anchors, refs, per_form) if anchors is not None and refs else None
    plan.start(score_part, "scoring and writing the report")
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
        "similarity": rows.meta,
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
        "audit": audit(a_vec=a_vec, c_vendi=c_vendi, c_max=c_max, near=levels["near"], center=params.center),
        "findings": [f["text"] for f in fired],
        "finding_rules": [f["rule"] for f in fired],
        "warnings": [subset_warning] if subset_warning else [],
        "timings_s": {
            "represent_alignment": round(t1 - t0, 3),
            **{k: round(v, 3) for k, v in rows.timings.items()},
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
        Arrays.C_MAX: c_max.astype(np.float32),
        Arrays.C_TOPK_MEAN: c_topk_mean.astype(np.float32),
        Arrays.C_TOPK_IDX: sim.c_topk_idx.astype(np.int64),
        Arrays.C_TOPK_SIM: sim.c_topk_sim.astype(np.float32),
        Arrays.A_MAX: sim.a_max_sim.astype(np.float32),
        Arrays.A_ARGMAX: sim.a_argmax.astype(np.int64),
        Arrays.C_CONTRIBUTION: contrib.astype(np.float32),
        **{subset_array(k): v.astype(np.int64) for k, v in subs.items()},
    }
    if per_form:
        arrays[Arrays.C_ANCHOR_MARGIN] = risk.headline_margin(per_form, scored)
        for k, v in per_form.items():
            arrays[form_array("margin", k)] = v["margin"]
            arrays[form_array("zh", k)] = v["zh"].astype(np.float32)
            # the nearest harmful anchor of each row (the flagged rows name it; computed above anyway)
            arrays[form_array("harmful_idx", k)] = np.asarray(v["harmful_idx"], dtype=np.int64)
            arrays[form_array("harmful_sim", k)] = np.asarray(v["harmful_sim"], dtype=np.float32)
    plan.finish(score_part, f"risk {scored['risk_score']:.1f} ({scored['tier']})")
    return Outcome(body=body, arrays=arrays)
