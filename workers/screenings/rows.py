"""The per-row part of a screening: what each customer row needs of the alignment set and the anchors.

A screening's work splits in two. Everything about the alignment set and the anchors (their vectors, the
self-reference, the anchors' own margins) is computed once. Everything about the customer rows (their
vectors, their top-k alignment neighbours, their anchor margins, and each alignment row's best customer
match) is computed row by row, so a slice of the customer set gives exactly the rows the whole set would:

* `compute` runs the row part over one slice: the whole set (`workers.screenings.screening.screen`), or one
shard of a
  sharded screening (`workers.screenings.shards`);
* `Rows.concat` joins slices in order: row results concatenate, each alignment row's best match combines by
  max with its argmax (ties keep the earlier row, as the comparison itself does), the Gram sums add in order.

Exactness holds because every slice starts on a multiple of the comparison's block size (`part_rows`), so the
blocks, the per-chunk Gram matrices and the bf16-screen decision (taken from the whole set's size) are the
ones an unsharded run uses. Shards store their `Rows` as plain arrays (never a pickle).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.screenings import anchors as anchor_forms
from workers.screenings.audit import gram
from workers.screenings.progress import Plan
from workers.screenings.similarity import compare, screens, self_reference

ROW_FORM_KEYS = ("margin", "zh", "harmful_idx", "harmful_sim", "safe_idx", "safe_sim")
STAT_KEYS = ("examples", "from_cache", "computed")


def part_rows(rows: int, block_size: int) -> int:
    """The slice size: `rows` rounded up to a multiple of the comparison's block size."""
    return max(1, -(-rows // block_size)) * block_size


@dataclass
class Rows:
    """The row results of one slice of the customer set (or of all of it)."""

    c_topk_sim: np.ndarray  # (n, k) float32
    c_topk_idx: np.ndarray  # (n, k) int64 into the alignment set
    a_max: np.ndarray  # (n_a,) float32: each alignment row's best cosine to a row of this slice
    a_argmax: np.ndarray  # (n_a,) int64 into the whole customer set (offset by the slice's start)
    per_form: dict[str, dict[str, np.ndarray]]
    gram: np.ndarray | None  # (d, d) float64: sum over parts of X^T X of the unit rows (None: centred)
    stats: dict[str, int]  # the customer pass's cache stats
    meta: dict[str, Any] = field(default_factory=dict)  # the comparison's (method, precision, ...)
    timings: dict[str, float] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for a shard's blob (numbers only: the metadata lives in SQL)."""
        out = {
            "c_topk_sim": self.c_topk_sim,
            "c_topk_idx": self.c_topk_idx,
            "a_max": self.a_max,
            "a_argmax": self.a_argmax,
            "stats": np.asarray([self.stats[k] for k in STAT_KEYS], dtype=np.int64),
        }
        if self.gram is not None:
            out["gram"] = self.gram
        for name, arrs in self.per_form.items():
            out |= {f"form_{name}_{k}": arrs[k] for k in ROW_FORM_KEYS}
        return out

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], forms: list[str], meta: dict[str, Any], timings: dict[str, float]
    ) -> Rows:
        return cls(
            c_topk_sim=arrays["c_topk_sim"],
            c_topk_idx=arrays["c_topk_idx"],
            a_max=arrays["a_max"],
            a_argmax=arrays["a_argmax"],
            per_form={f: {k: arrays[f"form_{f}_{k}"] for k in ROW_FORM_KEYS} for f in forms},
            gram=arrays.get("gram"),
            stats=dict(zip(STAT_KEYS, (int(v) for v in arrays["stats"]), strict=True)),
            meta=meta,
            timings=timings,
        )

    @staticmethod
    def concat(parts: Iterable[Rows]) -> Rows:
        """Join slices given in row order (their `a_argmax` already offset to whole-set rows). `parts` may be
        a generator: the column maxima, the Gram sum (d x d float64, the bulk of a shard's blob) and the
        counts are folded in as each slice comes, so only the per-row arrays of all slices are held."""
        it = iter(parts)
        first = next(it, None)
        if first is None:
            raise ValueError("no slices to join")
        a_max, a_arg = first.a_max.copy(), first.a_argmax.copy()
        g = None if first.gram is None else first.gram.copy()
        all_gram = g is not None
        rows: dict[str, list[np.ndarray]] = {"c_topk_sim": [], "c_topk_idx": []}
        forms: dict[str, dict[str, list[np.ndarray]]] = {
            f: {k: [] for k in ROW_FORM_KEYS} for f in first.per_form
        }
        falls: list[dict[str, int]] = []
        timings: dict[str, float] = {}
        stats = dict.fromkeys(STAT_KEYS, 0)
        for i, p in enumerate(itertools.chain([first], it)):
            if i:
                later = p.a_max > a_max  # strict: an equal value keeps the earlier row
                a_max, a_arg = np.where(later, p.a_max, a_max), np.where(later, p.a_argmax, a_arg)
                all_gram = all_gram and p.gram is not None
                if all_gram and g is not None and p.gram is not None:
                    g += p.gram
            rows["c_topk_sim"].append(p.c_topk_sim)
            rows["c_topk_idx"].append(p.c_topk_idx)
            for f, arrs in forms.items():
                for k in ROW_FORM_KEYS:
                    arrs[k].append(p.per_form[f][k])
            if p.meta.get("fp32_fallback"):
                falls.append(p.meta["fp32_fallback"])
            for k, v in p.timings.items():
                timings[k] = timings.get(k, 0.0) + v
            for k in STAT_KEYS:
                stats[k] += p.stats[k]
        meta = dict(first.meta)
        if falls:
            meta["fp32_fallback"] = {k: sum(int(f[k]) for f in falls) for k in falls[0]}
        return Rows(
            c_topk_sim=np.concatenate(rows["c_topk_sim"]),
            c_topk_idx=np.concatenate(rows["c_topk_idx"]),
            a_max=a_max.astype(np.float32),
            a_argmax=a_arg.astype(np.int64),
            per_form={f: {k: np.concatenate(v) for k, v in arrs.items()} for f, arrs in forms.items()},
            gram=g if all_gram else None,
            stats=stats,
            meta=meta,
            timings=timings,
        )


class Shared:
    """The parts of a screening that read the alignment set and the anchors alone, planned into `plan`:
    the alignment pass (and with `reference` its self-reference) and the anchors' references. Every step of
    a sharded screening plans them: the prepare computes them into the cache, shards and merge read them."""

    def __init__(
        self,
        plan: Plan,
        alignment: Any,
        representer: Any,
        cache: Any,
        anchors: Any,
        params: Any,
        device: str,
        *,
        reference: bool,
    ) -> None:
        from workers.screenings.screening import Pass

        self.plan, self.cache, self.anchors, self.params, self.device = plan, cache, anchors, params, device
        self.a_pass = Pass("represent_alignment", alignment, representer, cache, plan)
        n_a = len(alignment.examples)
        # the alignment set's own nearest neighbours: part of its stage (it reads the alignment set alone)
        self.ref_part = (
            plan.compare_part("represent_alignment", float(min(2000, n_a)) * n_a * representer.dim, device)
            if reference
            else None
        )
        self.passes: dict[tuple[str, str, int], Any] = {}
        if anchors is not None:
            for side, rep, acache in anchor_forms.side_passes(anchors, cache):
                key = (rep.identity, side.sha256, id(acache))
                self.passes.setdefault(key, Pass("anchors", side, rep, acache, plan))
        self.refs: dict[str, Any] = {}

    def alignment(self) -> tuple[np.ndarray, dict[str, int], dict[str, Any] | None]:
        """The alignment vectors, their cache stats and (if planned) the self-reference levels."""
        a_vec, a_stats = self.a_pass.run()
        ref = None
        if self.ref_part is not None:
            p = self.params
            self.plan.start(self.ref_part, "the alignment set's own nearest neighbours")
            ref = self_reference(a_vec, sample=2000, seed=p.seed, center=p.center, block_size=p.block_size)
            self.plan.finish(self.ref_part)
        return a_vec, a_stats, ref

    def represent(self, side: Any, rep: Any, acache: Any) -> Any:
        from workers.screenings.screening import Pass

        key = (rep.identity, side.sha256, id(acache))
        if key not in self.passes:  # not planned (it should have been): runs, unweighted
            self.passes[key] = Pass("anchors", side, rep, acache, self.plan)
        return self.passes[key].run()

    def references(self) -> dict[str, Any]:
        """The anchors' references, once, when first asked for (the anchor stage's start)."""
        if not self.refs and self.anchors is not None:
            self.refs.update(anchor_forms.references(self.reading()))
        return self.refs

    def reading(self) -> anchor_forms.Reading:
        p = self.params
        return anchor_forms.Reading(
            self.anchors, self.cache, self.represent, p.center, p.block_size, self.device
        )


class Work:
    """The row part of one slice as planned parts of a progress `Plan`, weighed before any runs: the
    customer pass, the comparison, and the anchor passes and searches over the slice's rows."""

    def __init__(
        self,
        plan: Plan,
        customer: Any,
        representer: Any,
        cache: Any,
        anchors: Any,
        *,
        n_alignment: int,
        n_total: int,
        device: str,
    ) -> None:
        from workers.screenings.screening import Pass

        self.plan, self.customer, self.representer, self.cache, self.anchors = (
            plan,
            customer,
            representer,
            cache,
            anchors,
        )
        self.n_total, self.n_a, self.device = n_total, n_alignment, device
        n_c, dim = len(customer.examples), representer.dim
        self.c_pass = Pass("represent_customer", customer, representer, cache, plan)
        self.compare_part = plan.compare_part("compare", float(n_c) * n_alignment * dim, device)
        self.passes: dict[tuple[str, str, int], Any] = {}
        self.anchor_part = None
        if anchors is not None:
            for side, rep, acache in anchor_forms.customer_passes(customer, representer, anchors, cache):
                key = (rep.identity, side.sha256, id(acache))
                self.passes.setdefault(key, Pass("anchors", side, rep, acache, plan))
            self.anchor_part = plan.compare_part(
                "anchors", anchor_forms.multiply_adds(n_c, anchors) - _anchor_self_work(anchors), device
            )

    def represent(self, side: Any, rep: Any, acache: Any) -> Any:
        from workers.screenings.screening import Pass

        key = (rep.identity, side.sha256, id(acache))
        if key not in self.passes:  # not planned (it should have been): runs, unweighted
            self.passes[key] = Pass("anchors", side, rep, acache, self.plan)
        return self.passes[key].run()

    def run(
        self, a_vec: np.ndarray, references: Callable[[], dict[str, Any]], params: Any, *, start: int = 0
    ) -> tuple[Rows, np.ndarray]:
        """The slice's rows (their `a_argmax` offset by `start`, the slice's first row in the whole set) and
        the slice's customer vectors. `references` gives the anchors' references
        (workers.screenings.anchors), asked for when the anchor stage begins."""
        t0 = time.perf_counter()
        c_vec, stats = self.c_pass.run()
        t1 = time.perf_counter()
        plan, part = self.plan, self.compare_part
        screen = screens(self.n_total, self.n_a, self.device)
        plan.start(part, "comparing in blocks")
        sim = compare(
            c_vec,
            a_vec,
            k=params.top_k,
            block_size=params.block_size,
            center=params.center,
            device=self.device,
            method=params.method,
            faiss_threshold=params.faiss_threshold,
            screen=screen if params.exact(self.n_a) else None,
            progress=lambda f: plan.advance(part, f),
        )
        plan.finish(part)
        t2 = time.perf_counter()
        per_form: dict[str, dict[str, np.ndarray]] = {}
        if self.anchors is not None and self.anchor_part is not None:
            apart, refs = self.anchor_part, references()
            reading = anchor_forms.Reading(
                self.anchors, self.cache, self.represent, params.center, params.block_size, self.device
            )
            per_form = anchor_forms.rows(
                self.customer,
                c_vec,
                self.representer,
                reading,
                refs,
                screens(self.n_total, max(len(f.harmful.examples) for f in self.anchors.forms), self.device),
                progress=lambda f: plan.advance(apart, f),
            )
            plan.finish(apart)
        g = None
        if not params.center:
            step = part_rows(params.part_rows, params.block_size)
            g = sum_grams(c_vec, step)
        rows = Rows(
            c_topk_sim=sim.c_topk_sim,
            c_topk_idx=sim.c_topk_idx,
            a_max=sim.a_max_sim.astype(np.float32),
            a_argmax=sim.a_argmax.astype(np.int64) + start,
            per_form=per_form,
            gram=g,
            stats=stats,
            meta=sim.meta,
            timings={
                "represent_customer": t1 - t0,
                "compare": t2 - t1,
                "anchors": time.perf_counter() - t2,
            },
        )
        return rows, c_vec


def sum_grams(c_vec: np.ndarray, step: int) -> np.ndarray:
    """The Gram matrix of the unit rows, summed part by part in row order (as the shards' are)."""
    total = gram(c_vec[:step])
    for s in range(step, c_vec.shape[0], step):
        total += gram(c_vec[s : s + step])
    return total


def _anchor_self_work(anchors: Any) -> float:
    """The anchors' searches among themselves (the references', computed once per screening)."""
    total = 0.0
    for form in anchors.forms:
        nh, ns = len(form.harmful.examples), len(form.safe.examples)
        total += float(nh + ns) * (nh + ns) * (form.representer or anchors.representer).dim
    return total
