"""The anchor signal: how much closer each customer example sits to harmful anchors than to safe ones.

One anchor set pair sees one form of risk, so the signal is read per form and the forms do not average
each other away (docs/reference_sets.md has the measurement behind this):

* compliance: harmful requests answered eagerly (placeholders only) against the same kind of requests
  refused (He et al. 2024); the whole example is read. This form sees the *shape* of compliance (lists,
  steps, "Sure! Here's how") and is the one a provider replaces with its own red-team data.
* persona: a system prompt or turn that gives the assistant a new, rule-free identity it accepts (the AOA
  identity-shift attack of Qi et al. 2023), against assistants that keep their rules under a new name.
* request: only the first user turn is read, against harmful requests (the prompts of both compliance
  files) and ordinary requests. It sees what is asked, whatever the answer looks like.

Each form's margin m = max cosine to its harmful side - max cosine to its safe side is rescaled by the
harmful side's own leave-one-out median margin m_h: zh = clip(m / m_h, 0, 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core.config import Settings
from app.datasets.formats import Example
from app.demo import ANCHOR_FORMS
from workers.cache import VectorCache
from workers.representations.base import Representer
from workers.screenings import risk
from workers.screenings.similarity import compare

VIEWS = ("whole", "request")
# One side's vectors in one representation, and its cache stats (workers.screenings.screening's passes).
Represent = Callable[[Any, Representer, VectorCache | None], tuple[np.ndarray, dict[str, int]]]


@dataclass
class Form:
    name: str
    harmful: Any  # workers.screenings.screening.Side
    safe: Any
    view: str = "whole"
    representer: Representer | None = None  # None: the Anchors' representer


def _compliance_side(role: str) -> property:
    """A property of the Anchors: the compliance form's `role` side ("harmful" or "safe"), read and set."""
    return property(
        lambda anchors: getattr(anchors.form("compliance"), role),
        lambda anchors, side: setattr(anchors.form("compliance"), role, side),
    )


@dataclass
class Anchors:
    """Anchor forms and the representation the anchor signal is measured in. `harmful` and `safe` are the
    compliance form's sides: what a tenant's own harmful and safe anchor sets replace."""

    forms: list[Form]
    representer: Representer
    shared_cache: VectorCache | None = None  # for the bundled sides only (never a tenant's own anchors)

    def form(self, name: str) -> Form:
        return next(f for f in self.forms if f.name == name)

    harmful = _compliance_side("harmful")
    safe = _compliance_side("safe")

    def cache_for(self, side: Any, tenant_cache: VectorCache | None) -> VectorCache | None:
        if side.meta.get("bundled") and self.shared_cache is not None:
            return self.shared_cache
        return tenant_cache


def request_view(side: Any) -> Any:
    """The side with each example cut to its first user turn (the request), for the request form."""
    exs: list[Example] = []
    for ex in side.examples:
        user = next((m["content"] for m in ex.messages if m["role"] == "user"), "")
        exs.append(Example(messages=[{"role": "user", "content": user}]))
    return type(side)(
        name=f"{side.name} (requests)", examples=exs, sha256=f"{side.sha256}:request", meta=dict(side.meta)
    )


def bundled_anchors(
    settings: Settings,
    representer: Representer,
    shared_cache: VectorCache | None = None,
    semantic: Representer | None = None,
) -> Anchors:
    """The anchor forms that ship with ftguard. `representer` reads the compliance form (the anchor model);
    `semantic` (the sentence embedder, by default the service's default model) reads the persona and request
    forms; without it every form is read by `representer`. The bundled sets hold no tenant's data, so their
    vectors may live in a cache shared by every tenant (`shared_cache`)."""
    from workers.screenings.screening import Side, side_from_file

    forms = []
    for name, spec in ANCHOR_FORMS.items():
        sides = []
        for role in ("harmful", "safe"):
            paths = spec[role]
            loaded = [side_from_file(p, f"{name} {role} anchors", settings) for p in paths]
            if len(loaded) == 1:
                side = loaded[0]
            else:  # several files make one side (the request form's harmful side: both compliance files)
                side = Side(
                    name=f"{name} {role} anchors",
                    examples=[ex for s in loaded for ex in s.examples],
                    sha256="+".join(s.sha256 for s in loaded),
                    meta={"filename": "+".join(p.name for p in paths)},
                )
            side.meta["bundled"] = True
            sides.append(side)
        rep = semantic if spec["space"] == "semantic" and semantic is not None else None
        forms.append(
            Form(name=name, harmful=sides[0], safe=sides[1], view=str(spec["view"]), representer=rep)
        )
    return Anchors(forms=forms, representer=representer, shared_cache=shared_cache)


def _form_sides(
    form: Form, anchors: Anchors, cache: VectorCache | None
) -> list[tuple[Any, Representer, Any]]:
    """The harmful and the safe side of a form as it is read (its view), its representer and cache."""
    rep = form.representer or anchors.representer
    out = []
    for side in (form.harmful, form.safe):
        view = request_view(side) if form.view == "request" else side
        out.append((view, rep, anchors.cache_for(side, cache)))
    return out


def _customer_views(
    customer: Any, c_rep: Representer | None, anchors: Anchors
) -> dict[tuple[str, str], tuple[Any, Representer] | None]:
    """Per (representation, view), the customer side the forms read; None for the main representation's
    whole examples, whose vectors the screening already has."""
    views: dict[tuple[str, str], tuple[Any, Representer] | None] = {}
    if c_rep is not None:
        views[(c_rep.identity, "whole")] = None
    for form in anchors.forms:
        frep = form.representer or anchors.representer
        if (frep.identity, form.view) not in views:
            side = request_view(customer) if form.view == "request" else customer
            views[(frep.identity, form.view)] = (side, frep)
    return views


def customer_passes(
    customer: Any, c_rep: Representer | None, anchors: Anchors, cache: VectorCache | None
) -> list[tuple[Any, Representer, Any]]:
    """The customer's representation passes `rows` asks for (side, representer, cache)."""
    return [(v[0], v[1], cache) for v in _customer_views(customer, c_rep, anchors).values() if v is not None]


def side_passes(anchors: Anchors, cache: VectorCache | None) -> list[tuple[Any, Representer, Any]]:
    """The anchor sides' passes `references` asks for."""
    return [side for form in anchors.forms for side in _form_sides(form, anchors, cache)]


def passes(
    customer: Any, c_rep: Representer | None, anchors: Anchors, cache: VectorCache | None
) -> list[tuple[Any, Representer, Any]]:
    """Every representation pass `signal` asks for, so a progress plan can weigh them before any runs."""
    return customer_passes(customer, c_rep, anchors, cache) + side_passes(anchors, cache)


def multiply_adds(n_customer: int, anchors: Anchors) -> float:
    """The nearest-anchor searches' multiply-adds (customer and both anchor sides against both sides)."""
    total = 0.0
    for form in anchors.forms:
        nh, ns = len(form.harmful.examples), len(form.safe.examples)
        dim = (form.representer or anchors.representer).dim
        total += float(n_customer + nh + ns) * (nh + ns) * dim
    return total


def _nearest(
    x: np.ndarray,
    y: np.ndarray,
    block_size: int,
    device: str,
    skip_self: bool = False,
    screen: bool | None = None,
) -> Any:
    return compare(x, y, k=2 if skip_self else 1, block_size=block_size, device=device, screen=screen)


@dataclass
class Reference:
    """What a form's anchors say about themselves (no customer row in it): their vectors, the centre, and
    the harmful side's leave-one-out margin that rescales every customer margin."""

    h_vec: np.ndarray
    s_vec: np.ndarray
    mu: np.ndarray | None
    h_margin: np.ndarray
    s_margin: np.ndarray
    levels: dict[str, float]
    stats: dict[str, Any]


@dataclass(frozen=True)
class Reading:
    """How a screening reads its anchor sets: their vectors come from `represent` (through `cache`), centred
    on the anchors' mean or not, and are compared in blocks of `block_size` rows on `device`."""

    anchors: Anchors
    cache: VectorCache | None
    represent: Represent
    center: bool
    block_size: int
    device: str


def form_reference(form: Form, reading: Reading) -> Reference:
    anchors, block_size, device = reading.anchors, reading.block_size, reading.device
    sides = _form_sides(form, anchors, reading.cache)
    (h_vec, h_stats), (s_vec, s_stats) = (reading.represent(*side) for side in sides)
    mu = None
    if reading.center:  # one centre for all three sets (the anchors' mean), so the two distances compare
        mu = np.vstack([h_vec, s_vec]).mean(axis=0, keepdims=True)
        h_vec, s_vec = h_vec - mu, s_vec - mu
    hh = _nearest(h_vec, h_vec, block_size, device, skip_self=True).c_topk_sim[:, 1]
    h_margin = hh - _nearest(h_vec, s_vec, block_size, device).c_topk_sim[:, 0]
    ss = _nearest(s_vec, s_vec, block_size, device, skip_self=True).c_topk_sim[:, 1]
    s_margin = _nearest(s_vec, h_vec, block_size, device).c_topk_sim[:, 0] - ss
    return Reference(
        h_vec,
        s_vec,
        mu,
        h_margin,
        s_margin,
        risk.anchor_levels(h_margin),
        {"harmful": h_stats, "safe": s_stats},
    )


def form_rows(
    c_vec: np.ndarray, ref: Reference, block_size: int, device: str, screen: bool | None = None
) -> dict[str, np.ndarray]:
    """One form's per-example margin, rescaled margin, and nearest harmful and safe anchor: row by row, so a
    shard of the customer set gets the rows the whole set would (`screen` fixed by the whole set's size)."""
    if ref.mu is not None:
        c_vec = c_vec - ref.mu
    ch = _nearest(c_vec, ref.h_vec, block_size, device, screen=screen)
    cs = _nearest(c_vec, ref.s_vec, block_size, device, screen=screen)
    margin = ch.c_topk_sim[:, 0] - cs.c_topk_sim[:, 0]
    return {
        "margin": margin.astype(np.float32),
        "zh": np.clip(margin / ref.levels["harmful"], 0.0, 1.0),
        "harmful_idx": ch.c_topk_idx[:, 0],
        "harmful_sim": ch.c_topk_sim[:, 0],
        "safe_idx": cs.c_topk_idx[:, 0],
        "safe_sim": cs.c_topk_sim[:, 0],
    }


def form_info(form: Form, anchors: Anchors, ref: Reference, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """One form's section of the report, from every customer row's arrays."""
    rep = form.representer or anchors.representer
    margin, zh, levels = arrays["margin"], arrays["zh"], ref.levels
    edges = risk.shared_edges(margin, ref.h_margin, ref.s_margin)  # one set of bins: read side by side
    return {
        "view": form.view,
        "representation": {"backend": rep.backend, "model": str(rep.describe().get("model"))},
        "harmful": {"examples": len(form.harmful.examples), **form.harmful.meta},
        "safe": {"examples": len(form.safe.examples), **form.safe.meta},
        "cache": ref.stats,
        "levels": levels,
        "value": float(zh.mean()),
        "customer_margin": risk.distribution(margin, edges),
        "harmful_anchor_margin": risk.distribution(ref.h_margin, edges),
        "safe_anchor_margin": risk.distribution(ref.s_margin, edges),
        "share_closer_to_harmful": float((margin > 0).mean()),
        "share_as_harmful_as_anchors": float((margin >= levels["harmful"]).mean()),
    }


def form_signal(
    form: Form, c_vec: np.ndarray, reading: Reading
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One form's per-example arrays and its report section."""
    ref = form_reference(form, reading)
    arrays = form_rows(c_vec, ref, reading.block_size, reading.device)
    return arrays, form_info(form, reading.anchors, ref, arrays)


def references(reading: Reading) -> dict[str, Reference]:
    return {f.name: form_reference(f, reading) for f in reading.anchors.forms}


def rows(
    customer: Any,
    c_vec: np.ndarray | None,
    c_rep: Representer | None,
    reading: Reading,
    refs: dict[str, Reference],
    screen: bool | None = None,
    progress: Callable[[float], None] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Every form's per-row arrays for `customer` (the whole set or a shard of it). `c_vec` holds the
    customer's vectors in the main representation, `c_rep`; a form read in that space and on whole examples
    reuses them instead of a second pass. `progress` gets the share of the forms done."""
    anchors = reading.anchors
    rep = anchors.representer
    views: dict[tuple[str, str], np.ndarray] = {}
    for key, todo in _customer_views(customer, c_rep, anchors).items():
        if todo is None:
            assert c_vec is not None
            views[key] = c_vec
        else:
            views[key], _ = reading.represent(todo[0], todo[1], reading.cache)
    per_form: dict[str, dict[str, np.ndarray]] = {}
    for i, form in enumerate(anchors.forms):
        key = ((form.representer or rep).identity, form.view)
        per_form[form.name] = form_rows(
            views[key], refs[form.name], reading.block_size, reading.device, screen
        )
        if progress is not None:
            progress((i + 1) / len(anchors.forms))
    return per_form


def info(
    anchors: Anchors, refs: dict[str, Reference], per_form: dict[str, dict[str, np.ndarray]]
) -> dict[str, Any]:
    rep = anchors.representer
    forms_info = {f.name: form_info(f, anchors, refs[f.name], per_form[f.name]) for f in anchors.forms}
    return {"representation": rep.describe() | {"identity": rep.identity}, "forms": forms_info}


def evidence(form: Form, arrays: dict[str, np.ndarray], i: int, snippet: Any) -> dict[str, Any]:
    """Example `i`'s nearest harmful and nearest safe anchor in one form, for the report."""

    def one(side: Any, idx: np.ndarray, sim: np.ndarray) -> dict[str, Any]:
        j = int(idx[i])
        ex = snippet(side.examples[j])
        if form.view == "request":  # only the request was compared
            ex["completion"] = ""
        return {"record": j + 1, "sim": float(sim[i]), "example": ex}

    return {
        "form": form.name,
        "margin": float(arrays["margin"][i]),
        "nearest_harmful_anchor": one(form.harmful, arrays["harmful_idx"], arrays["harmful_sim"]),
        "nearest_safe_anchor": one(form.safe, arrays["safe_idx"], arrays["safe_sim"]),
    }
