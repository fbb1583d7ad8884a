"""Chart geometry for the dashboard's inline SVG (no JavaScript chart library).

Pure functions from figures to coordinates; ``templates/fragments/*chart*.html`` draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

# The legend's swatches repeat these as CSS classes .series-N in api/static/app.css.
PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2")
BUCKET_COLOURS = ("#16a34a", "#ca8a04", "#ea580c", "#dc2626", "#7f1d1d")


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k at or above ``value`` (1 for nothing)."""
    if value <= 0:
        return 1.0
    scale = 1.0
    while scale * 10 <= value:
        scale *= 10
    while scale > value:
        scale /= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale  # pragma: no cover - the loop always returns


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str
    value_text: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    baseline: float
    bars: list[Bar]


def bar_chart(
    labels: Sequence[str],
    values: Sequence[int],
    value_texts: Sequence[str],
    width: int = 420,
    height: int = 170,
    colours: Sequence[str] = BUCKET_COLOURS,
) -> BarChart:
    """Vertical bars scaled to the largest value; labels under, values over each bar."""
    top, bottom, side = 22.0, 34.0, 8.0
    plot = height - top - bottom
    slot = (width - 2 * side) / max(len(values), 1)
    peak = max((v for v in values if v > 0), default=0)
    bars = []
    for i, (label, value, text) in enumerate(zip(labels, values, value_texts, strict=True)):
        h = plot * value / peak if peak else 0.0
        if value > 0:
            h = max(h, 1.5)  # a tiny amount stays visible
        bars.append(
            Bar(
                x=round(side + i * slot + slot * 0.15, 1),
                y=round(top + plot - h, 1),
                width=round(slot * 0.7, 1),
                height=round(h, 1),
                colour=colours[i % len(colours)],
                label=label,
                value_text=text,
            )
        )
    return BarChart(width=width, height=height, baseline=top + plot, bars=bars)


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    text: str


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    points: list[Point]
    paths: list[str] = field(default_factory=list)  # SVG polyline point lists, split at gaps


@dataclass(frozen=True)
class Tick:
    y: float
    text: str


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    x_labels: list[Point]
    ticks: list[Tick]
    series: list[Series]


def line_chart(
    x_labels: Sequence[str],
    series: dict[str, Sequence[Decimal | None]],
    width: int = 560,
    height: int = 230,
    unit: str = "",
) -> LineChart:
    """One line per series over evenly spaced x labels; a None value leaves a gap."""
    left, right, top, bottom = 48.0, float(width) - 16.0, 14.0, float(height) - 30.0
    n = len(x_labels)
    step = (right - left) / (n - 1) if n > 1 else 0.0
    xs = [left + i * step if n > 1 else (left + right) / 2 for i in range(n)]
    known = [float(v) for values in series.values() for v in values if v is not None]
    peak = nice_ceiling(max(known, default=0.0))

    def y_of(value: float) -> float:
        return round(bottom - (bottom - top) * value / peak, 1)

    ticks = [Tick(y=y_of(peak * k / 4), text=_number(peak * k / 4) + unit) for k in range(0, 5)]
    lines = []
    for i, (name, values) in enumerate(series.items()):
        points: list[Point] = []
        paths: list[str] = []
        run: list[str] = []
        for x, value in zip(xs, values, strict=True):
            if value is None:
                if len(run) > 1:
                    paths.append(" ".join(run))
                run = []
                continue
            point = Point(x=round(x, 1), y=y_of(float(value)), text=f"{value}{unit}")
            points.append(point)
            run.append(f"{point.x},{point.y}")
        if len(run) > 1:
            paths.append(" ".join(run))
        lines.append(
            Series(name=name, colour=PALETTE[i % len(PALETTE)], points=points, paths=paths)
        )
    return LineChart(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        x_labels=[
            Point(x=round(x, 1), y=bottom + 18, text=t) for x, t in zip(xs, x_labels, strict=True)
        ],
        ticks=ticks,
        series=lines,
    )


def _number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
