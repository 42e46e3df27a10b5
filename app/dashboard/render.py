"""One renderer for the dashboard pages and the standalone HTML report (`ftguard screen --html`).

Templates are Jinja2 with autoescape on: every text from a dataset or a user is escaped. Charts are SVG built
server-side (`app.dashboard.charts`), so a page needs no JavaScript and loads nothing from elsewhere.
`redact=True` hides alignment texts and keeps their record numbers, for callers not allowed to see them.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from app.dashboard import charts
from app.screenings import explain
from app.screenings.service import redact as redact_report

STAGES = ("load", "represent_alignment", "represent_customer", "compare", "anchors", "score")
STAGE_NAMES = {
    "load": "read datasets",
    "represent_alignment": "represent alignment set",
    "represent_customer": "represent customer set",
    "compare": "compare",
    "anchors": "harmful-anchor signal",
    "score": "score",
}
LEVEL_HELP = {
    "floor": "p90 cosine of random pairs of alignment examples: unrelated in this space",
    "near": "p10 of the alignment set's nearest-neighbour cosine: as close as most alignment examples "
    "are to each other",
    "high": "median of that nearest-neighbour cosine: as close as a typical alignment example is to its "
    "nearest neighbour",
}
FORM_NAMES = {
    "compliance": "compliance (eager answers vs refusals)",
    "persona": "persona (identity shift vs assistants that keep their rules)",
    "request": "request (harmful vs ordinary requests)",
}
# the two histograms of a report: the customer's examples and the alignment set's
CUSTOMER_AXES = charts.Axes(
    "customer examples by max cosine to the alignment set", "max cosine to the alignment set", "examples"
)
ALIGNMENT_AXES = charts.Axes(
    "alignment examples by max cosine to the customer dataset",
    "max cosine to this dataset",
    "alignment examples",
    height=240,
)
SUBSET_HELP = {
    "high_sim": "alignment examples most similar to this dataset",
    "low_sim": "alignment examples least similar to this dataset (the paper's advice: align with these)",
    "random": "a seeded random sample, the baseline",
}


def _pct(x: float | None, digits: int = 0) -> str:
    return "" if x is None else f"{x * 100:.{digits}f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _when(ts: int | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@lru_cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("app.dashboard", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=_pct, num=_num, when=_when)
    env.globals.update(
        tier_colors=charts.TIER_COLORS,
        stage_names=STAGE_NAMES,
        risk_bar=lambda score, tier: Markup(charts.risk_bar(score, tier)),  # noqa: S704 (escaped SVG)
    )
    return env


@lru_cache
def stylesheet() -> str:
    return resources.files("app.dashboard").joinpath("static/dashboard.css").read_text()


def report_view(body: dict[str, Any], *, redact: bool = False) -> dict[str, Any]:
    """What the report templates show, from a stored report body (tolerant of missing optional keys).
    Redacted: the body as the API's redacted report has it (no alignment texts, file name or hash)."""
    if redact:
        body = redact_report(body)
    risk = body["risk"]
    levels: dict[str, float] = dict(risk.get("reference_levels") or {})
    self_nn = (body.get("reference") or {}).get("self_nn") or {}
    band = (self_nn["p10"], self_nn["p90"]) if "p10" in self_nn and "p90" in self_nn else None
    dists = body.get("distributions") or {}
    cust = dists.get("customer_max_sim") or {}
    align = dists.get("alignment_max_sim") or {}

    def hist(dist: dict[str, Any], axes: charts.Axes, **kw: Any) -> Markup | None:
        h = dist.get("histogram")
        if not h:
            return None
        return Markup(charts.histogram(h["edges"], h["counts"], axes, **kw))  # noqa: S704 (escaped SVG)

    def anchor_side(a: dict[str, Any]) -> dict[str, Any]:
        return {"record": a["record"], "sim": a["sim"], "example": None if redact else a.get("example")}

    top = []
    for ex in body.get("top_examples") or []:
        nearest = [
            {
                "record": n["record"],
                "sim": n["sim"],
                "example": None if redact else n.get("example"),
            }
            for n in ex.get("nearest_alignment") or []
        ]
        evidence = [
            {
                "form": FORM_NAMES.get(e["form"], e["form"]),
                "margin": e["margin"],
                "harmful": anchor_side(e["nearest_harmful_anchor"]),
                "safe": anchor_side(e["nearest_safe_anchor"]),
            }
            for e in ex.get("anchor_evidence") or []
        ]
        top.append(
            {
                "record": ex["record"],
                "max_sim": ex["max_sim"],
                "contribution": ex.get("contribution"),
                "example": ex.get("example"),
                "nearest": nearest,
                "evidence": evidence,
            }
        )
    parts = [
        {
            **p,
            "label": explain.PART_NAMES.get(p["name"], p["name"]),
            "scale": explain.PART_SCALES.get(p["name"], ""),
            "counted": p.get("counted", True),
            "max": 100 * p["weight"],
            "fill": p["value"] if p["weight"] else 0.0,
        }
        for p in risk.get("parts") or []
    ]
    shares = body.get("shares_above") or {}
    return {
        "risk_score": risk["risk_score"],
        "tier": risk["tier"],
        "formula": risk.get("formula", ""),
        "parts": parts,
        "levels": [
            {"name": k, "value": v, "share": shares.get(k), "help": LEVEL_HELP.get(k, "")}
            for k, v in levels.items()
        ],
        "findings": body.get("findings") or [],
        "customer_dist": cust,
        "alignment_dist": align,
        "gauge": Markup(charts.risk_gauge(risk["risk_score"], risk["tier"])),  # noqa: S704 (escaped SVG)
        "customer_hist": hist(cust, CUSTOMER_AXES, levels=levels, band=band),
        "alignment_hist": hist(align, ALIGNMENT_AXES),
        "band": band,
        "top_examples": top,
        "subsets": [
            {"name": k, "help": SUBSET_HELP.get(k, ""), **v} for k, v in (body.get("subsets") or {}).items()
        ],
        "customer": body.get("customer") or {},
        "alignment": body.get("alignment") or {},
        "representation": body.get("representation") or {},
        "similarity": similarity_summary(body.get("similarity") or {}),
        "params": body.get("params") or {},
        "timings": body.get("timings_s") or {},
        "cache": cache_summary(body.get("cache") or {}),
        "about": explain.about(body),
        "readings": risk.get("readings"),
        "warnings": body.get("warnings") or [],
        "redacted": redact,
    }


def cache_summary(cache: dict[str, Any]) -> str:
    """One line on where the vectors came from: per side, how many were read from the cache."""
    out = []
    for side in ("alignment", "customer"):
        st = cache.get(side)
        if isinstance(st, dict) and "examples" in st:
            out.append(f"{side} set {st.get('from_cache', 0)} of {st['examples']} vectors from cache")
        elif f"{side}_hit" in cache:
            out.append(f"{side} set {'from cache' if cache[f'{side}_hit'] else 'computed'}")
    return " · ".join(out)


def similarity_summary(meta: dict[str, Any]) -> str:
    """One line on how the comparison ran (workers.screenings.similarity's meta): method, precision, what
    fell back."""
    if not meta:
        return ""
    parts = [str(meta.get("method", "exact")), str(meta.get("precision", "fp32"))]
    fb = meta.get("fp32_fallback") or {}
    if fb:
        redo = f"{fb.get('rows', 0)} rows and {fb.get('columns', 0)} columns redone in fp32"
        if fb.get("unscreened_rows"):
            redo += f", {fb['unscreened_rows']} rows not screened (scores too bunched for bf16)"
        parts.append(redo)
    parts.append("centred" if meta.get("centered") else "not centred")
    if meta.get("recall_at_k") is not None:
        parts.append(f"measured recall@{meta.get('k')} {meta['recall_at_k']:.3f}")
    if meta.get("device"):
        parts.append(str(meta["device"]))
    return " · ".join(parts)


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def report_document(body: dict[str, Any], *, title: str, redact: bool = False) -> str:
    """The report as one standalone HTML file: styles inlined, charts inline SVG, no external resource."""
    return render(
        "report.html",
        title=title,
        report=report_view(body, redact=redact),
        inline_css=Markup(stylesheet()),  # noqa: S704 (our own file)
        standalone=True,
        generated_at=_when(int(dt.datetime.now(dt.UTC).timestamp())),
        links=None,
    )
