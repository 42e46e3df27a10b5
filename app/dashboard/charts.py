"""Charts as server-side SVG strings: no JavaScript, nothing fetched, the same markup in the dashboard and
in the standalone HTML report. Every text that goes into the SVG is escaped here; callers mark it safe."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from app.core import vocab

TIER_COLORS = {"low": "#2f9e44", "medium": "#f08c00", "high": "#e8590c", "critical": "#c92a2a"}
# (tier, lower, upper) on the 0-100 axis, from the tiers' own bounds
_UPPER = [min(upper, 100.0) for upper, _ in vocab.TIER_BOUNDS]
TIER_BOUNDS = tuple(
    (str(t), lo, hi) for (_, t), lo, hi in zip(vocab.TIER_BOUNDS, [0.0, *_UPPER], _UPPER, strict=False)
)
# Bars are coloured by where they sit against the alignment set's reference levels.
ZONE_COLORS = ("#adb5bd", "#fcc419", "#fd7e14", "#e03131")
LEVEL_STYLE = {"floor": ("#495057", "4 3"), "near": ("#d9480f", "6 3"), "high": ("#c92a2a", "")}


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Axes:
    """What an axis chart says, and its size: its title (the SVG's `<title>` and aria-label) and the x and
    y axis labels."""

    title: str
    x: str
    y: str
    width: int = 960
    height: int = 300


@dataclass(frozen=True)
class _Frame:
    """An axis chart's plot area (its size less the left, right, top and bottom margins) and the markup
    around it: the opening tag, the grid, the baseline, the ticks and the axis labels."""

    width: int
    height: int
    ml: int
    mr: int
    mt: int
    mb: int

    @property
    def pw(self) -> int:
        return self.width - self.ml - self.mr

    @property
    def ph(self) -> int:
        return self.height - self.mt - self.mb

    def start(self, kind: str, title: str) -> list[str]:
        return [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {self.width} {self.height}" '
            f'role="img" aria-label="{escape(title)}" data-chart="{kind}">',
            f"<title>{escape(title)}</title>",
        ]

    def grid_line(self, y: float, label: str) -> list[str]:
        """A horizontal grid line at height Y, its tick LABEL on the left."""
        return [
            f'<line x1="{self.ml}" x2="{self.ml + self.pw}" y1="{_f(y)}" y2="{_f(y)}" stroke="#e9ecef"/>',
            f'<text x="{self.ml - 6}" y="{_f(y + 4)}" text-anchor="end" class="tick">{label}</text>',
        ]

    def baseline(self) -> str:
        y = self.mt + self.ph
        return f'<line x1="{self.ml}" x2="{self.ml + self.pw}" y1="{y}" y2="{y}" stroke="#495057"/>'

    def x_tick(self, x: float, label: str) -> str:
        return (
            f'<text x="{_f(x)}" y="{self.mt + self.ph + 16}" text-anchor="middle" class="tick">{label}</text>'
        )

    def axis_labels(self, x_label: str, y_label: str) -> list[str]:
        x, y = self.ml + self.pw / 2, self.mt + self.ph / 2
        return [
            f'<text x="{x}" y="{self.height - 6}" text-anchor="middle" class="axis">{escape(x_label)}</text>',
            f'<text x="16" y="{y}" text-anchor="middle" class="axis" '
            f'transform="rotate(-90 16 {y})">{escape(y_label)}</text>',
        ]


def nice_ticks(hi: float, target: int = 4) -> list[float]:
    """0 and round steps up to at least `hi` (1, 2, 2.5 or 5 times a power of ten)."""
    if hi <= 0:
        return [0.0, 1.0]
    raw = hi / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(n + 1)]


def nice_range(lo: float, hi: float, target: int = 4, *, integer: bool = False) -> list[float]:
    """Round ticks covering [lo, hi]: from 0 when lo is near 0 (under 40% of hi), else from a round value
    just under lo, so a curve that moves little is not drawn flat; whole steps only when `integer`."""
    lo = 0.0 if lo < 0.4 * hi else lo
    span = max(hi - lo, abs(hi) * 1e-3, 1e-9)
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1.0, math.ceil(step))
    start = math.floor(lo / step + 1e-9) * step
    n = max(1, math.ceil((hi - start) / step - 1e-9))
    return [round(start + i * step, 10) for i in range(n + 1)]


def histogram(
    edges: Sequence[float],
    counts: Sequence[int],
    axes: Axes,
    *,
    levels: dict[str, float] | None = None,
    band: tuple[float, float] | None = None,
) -> str:
    """Bars of `counts` over `edges`, trimmed to where there is data or a level, with reference levels as
    labelled vertical lines and an optional shaded band (the alignment set's own nearest-neighbour range)."""
    levels = levels or {}
    nz = [i for i, c in enumerate(counts) if c]
    points = [*levels.values(), *(band or ())]
    lows = [edges[nz[0]], *points] if nz else points
    highs = [edges[nz[-1] + 1], *points] if nz else points
    lo_v, hi_v = (min(lows), max(highs)) if lows else (0.0, 1.0)
    step = edges[1] - edges[0]
    x0 = max(edges[0], math.floor((lo_v - step) / step) * step)
    x1 = min(edges[-1], math.ceil((hi_v + step) / step) * step)
    if x1 - x0 < 4 * step:
        x1 = min(edges[-1], x0 + 4 * step)
    frame = _Frame(axes.width, axes.height, ml=56, mr=16, mt=36, mb=44)
    ml, mt, pw, ph = frame.ml, frame.mt, frame.pw, frame.ph
    ymax = max(counts) if counts else 0
    yt = nice_ticks(max(ymax, 1))
    ytop = yt[-1]

    def sx(v: float) -> float:
        return ml + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return mt + ph - v / ytop * ph

    thresholds = [levels[k] for k in ("floor", "near", "high") if k in levels]
    out = frame.start("histogram", axes.title)
    if band:
        bx0, bx1 = sx(max(band[0], x0)), sx(min(band[1], x1))
        out.append(
            f'<rect class="band" x="{_f(bx0)}" y="{mt}" width="{_f(max(bx1 - bx0, 0))}" height="{ph}" '
            'fill="#4dabf7" fill-opacity="0.12"><title>alignment examples to their own nearest neighbour, '
            f"p10 to p90: {band[0]:.3f} to {band[1]:.3f}</title></rect>"
        )
    for t in yt:
        out += frame.grid_line(sy(t), _f(t))
    for i, c in enumerate(counts):
        a, b = edges[i], edges[i + 1]
        if b <= x0 or a >= x1 or not c:
            continue
        mid = (a + b) / 2
        zone = sum(mid >= t for t in thresholds)
        x, w = sx(a) + 1, max(sx(b) - sx(a) - 2, 1)
        out.append(
            f'<rect class="bar" x="{_f(x)}" y="{_f(sy(c))}" width="{_f(w)}" height="{_f(sy(0) - sy(c))}" '
            f'fill="{ZONE_COLORS[min(zone, 3)]}"><title>{a:.2f} to {b:.2f}: {c} {escape(axes.y)}'
            "</title></rect>"
        )
    out.append(frame.baseline())
    nt = round((x1 - x0) / step)
    every = max(1, math.ceil(nt / 10))
    for j in range(0, nt + 1, every):
        v = x0 + j * step
        out.append(frame.x_tick(sx(v), f"{v:.2f}"))
    out += frame.axis_labels(axes.x, axes.y)
    # Level labels alternate rows when lines are close, so they never overlap.
    last_x, row = -1e9, 0
    for name in ("floor", "near", "high"):
        if name not in levels:
            continue
        color, dash = LEVEL_STYLE[name]
        x = sx(levels[name])
        row = 1 - row if x - last_x < 70 else 0
        last_x = x
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<line class="level" data-level="{name}" x1="{_f(x)}" x2="{_f(x)}" y1="{mt - 4}" '
            f'y2="{mt + ph}" stroke="{color}" stroke-width="2"{dash_attr}>'
            f"<title>{name}: {levels[name]:.3f}</title></line>"
        )
        out.append(
            f'<text x="{_f(x)}" y="{mt - 8 - 12 * row}" text-anchor="middle" class="level-label" '
            f'fill="{color}">{name} {levels[name]:.2f}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def risk_gauge(score: float, tier: str, *, width: int = 360, height: int = 58) -> str:
    """A 0-100 scale in tier bands with a marker at the score."""
    ml, mr, top, bh = 10, 10, 22, 12
    pw = width - ml - mr

    def sx(v: float) -> float:
        return ml + max(0.0, min(v, 100.0)) / 100 * pw

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gauge" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="risk {score:.1f} of 100, {escape(tier)}" data-chart="gauge">',
        f"<title>risk {score:.1f} of 100 ({escape(tier)})</title>",
    ]
    for name, a, b in TIER_BOUNDS:
        out.append(
            f'<rect x="{_f(sx(a))}" y="{top}" width="{_f(sx(b) - sx(a))}" height="{bh}" '
            f'fill="{TIER_COLORS[name]}" fill-opacity="{1 if name == tier else 0.28}"/>'
        )
        out.append(
            f'<text x="{_f((sx(a) + sx(b)) / 2)}" y="{top + bh + 14}" text-anchor="middle" '
            f'class="tick">{name}</text>'
        )
    x = sx(score)
    out.append(
        f'<path d="M{_f(x - 7)},{top - 12} L{_f(x + 7)},{top - 12} L{_f(x)},{top - 1} Z" fill="#212529"/>'
    )
    out.append(
        f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{top}" y2="{top + bh}" stroke="#212529" stroke-width="2"/>'
    )
    out.append("</svg>")
    return "".join(out)


def risk_bar(score: float | None, tier: str | None, *, width: int = 120, height: int = 12) -> str:
    """A small bar for a table cell: its length is the score, its colour the tier."""
    if score is None or tier is None:
        return ""
    w = max(0.0, min(score, 100.0)) / 100 * width
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="riskbar" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="risk {score:.1f}">'
        f'<rect width="{width}" height="{height}" rx="3" fill="#f1f3f5"/>'
        f'<rect width="{_f(w)}" height="{height}" rx="3" fill="{TIER_COLORS.get(tier, "#868e96")}"/></svg>'
    )


def line_chart(series: Sequence[tuple[str, str, Sequence[Sequence[float]]]], axes: Axes) -> str:
    """Lines of (x, y) points, one per (name, colour, points) in `series`: x from 0 in whole steps, y over
    the points' range (`nice_range`); each line's last point marked with its value."""
    drawn = [(n, c, [(float(x), float(y)) for x, y in pts]) for n, c, pts in series if pts]
    xs = [x for _, _, pts in drawn for x, _ in pts] or [1.0]
    ys = [y for _, _, pts in drawn for _, y in pts] or [1.0]
    frame = _Frame(axes.width, axes.height, ml=56, mr=96, mt=16, mb=44)
    ml, mt, pw, ph = frame.ml, frame.mt, frame.pw, frame.ph
    xt = nice_range(0.0, max(max(xs), 1.0), 6, integer=True)
    yt = nice_range(min(ys), max(ys))

    def sx(v: float) -> float:
        return ml + (v - xt[0]) / (xt[-1] - xt[0]) * pw

    def sy(v: float) -> float:
        return mt + ph - (v - yt[0]) / (yt[-1] - yt[0]) * ph

    out = frame.start("line", axes.title)
    for t in yt:
        out += frame.grid_line(sy(t), f"{t:g}")
    out.append(frame.baseline())
    out += [frame.x_tick(sx(t), f"{t:g}") for t in xt]
    out += frame.axis_labels(axes.x, axes.y)
    for i, (name, color, pts) in enumerate(drawn):
        path = " ".join(f"{_f(sx(x))},{_f(sy(y))}" for x, y in pts)
        lx, ly = pts[-1]
        out.append(
            f'<polyline class="line" data-series="{escape(name)}" points="{path}" fill="none" '
            f'stroke="{color}" stroke-width="2" stroke-linejoin="round">'
            f"<title>{escape(name)}</title></polyline>"
        )
        out.append(
            f'<circle cx="{_f(sx(lx))}" cy="{_f(sy(ly))}" r="3.5" fill="{color}">'
            f"<title>{escape(name)}: {ly:.4g} at {escape(axes.x)} {lx:g}</title></circle>"
        )
        label = f"{name} {ly:.4g}" if len(drawn) > 1 else f"{ly:.4g}"
        out.append(
            f'<text x="{ml + pw + 8}" y="{mt + 12 + 16 * i}" class="level-label" fill="{color}">'
            f"{escape(label)}</text>"
        )
    out.append("</svg>")
    return "".join(out)
