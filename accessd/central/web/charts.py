"""Charts drawn on the server as SVG: they print, need no JavaScript, and carry their numbers
(a `<title>` per mark for a tooltip, an `aria-label` for screen readers, and the page shows
the same figures in tables)."""

from __future__ import annotations

import calendar
from typing import Any

from markupsafe import Markup, escape

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
COLOURS = {"subscriber": "#1f4e8c", "occasional": "#9a4a00"}
DASH = {"subscriber": "", "occasional": "6 4"}
INK = "#1a1a1a"
GRID = "#c8c8c8"


def _svg(width: int, height: int, label: str, body: list[str]) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}" '
        f'class="chart"><title>{escape(label)}</title>{"".join(body)}</svg>')


def _text(x: float, y: float, text: Any, anchor: str = "middle", size: int = 11) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{INK}">{escape(str(text))}</text>')


def _shade(value: float, top: float) -> str:
    """White to dark blue; the value's share of the top value."""
    share = 0.0 if top <= 0 else min(1.0, value / top)
    light, dark = (247, 251, 255), (8, 48, 107)
    rgb = [round(a + (b - a) * share) for a, b in zip(light, dark, strict=True)]
    return "#" + "".join(f"{c:02x}" for c in rgb)


def heatmap(heat: list[list[float]], *, label: str) -> Markup:
    """Weekday (rows) x hour (columns): average number of people present."""
    cell, left, top_pad = 24, 40, 22
    width, height = left + 24 * cell + 10, top_pad + 7 * cell + 40
    top = max((v for row in heat for v in row), default=0.0)
    body = [_text(left + h * cell + cell / 2, top_pad - 6, h, size=10) for h in range(0, 24, 2)]
    for d, row in enumerate(heat):
        y = top_pad + d * cell
        body.append(_text(left - 6, y + cell / 2 + 4, WEEKDAYS[d], "end"))
        for h, v in enumerate(row):
            body.append(f'<rect x="{left + h * cell}" y="{y}" width="{cell - 1}" '
                        f'height="{cell - 1}" fill="{_shade(v, top)}" stroke="{GRID}" '
                        f'stroke-width="0.5"><title>{WEEKDAYS[d]} {h:02d}:00: {v:.2f} '
                        'present on average</title></rect>')
    legend_y = top_pad + 7 * cell + 14
    for i in range(6):
        v = top * i / 5
        body.append(f'<rect x="{left + i * 40}" y="{legend_y}" width="38" height="10" '
                    f'fill="{_shade(v, top)}" stroke="{GRID}" stroke-width="0.5"/>')
        body.append(_text(left + i * 40 + 19, legend_y + 22, f"{v:.1f}", size=10))
    body.append(_text(left + 6 * 40 + 8, legend_y + 9, "people present (average)", "start",
                      10))
    return _svg(width, height, label, body)


def _scale(top: float) -> tuple[float, list[float]]:
    """A round top for an axis and its ticks."""
    if top <= 0:
        return 1.0, [0.0, 1.0]
    step = 1.0
    for candidate in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000):
        step = float(candidate)
        if top / step <= 5:
            break
    n = int(-(-top // step))
    return n * step, [i * step for i in range(n + 1)]


def day_lines(series: dict[str, list[int]], month: str) -> Markup:
    """Unique visitors per day of the month, one line per plan."""
    ndays = calendar.monthrange(int(month[:4]), int(month[5:7]))[1]
    left, right, top_pad, bottom = 40, 130, 12, 30
    width, height = 720, 220
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    top, ticks = _scale(max((v for vs in series.values() for v in vs), default=0))

    def xy(day: int, v: float) -> tuple[float, float]:
        x = left + (day - 1) * plot_w / max(1, ndays - 1)
        return x, top_pad + plot_h - v / top * plot_h

    body = []
    for t in ticks:
        y = xy(1, t)[1]
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                    f'stroke="{GRID}" stroke-width="0.5"/>')
        body.append(_text(left - 6, y + 4, f"{t:g}", "end", 10))
    for day in range(1, ndays + 1, 2 if ndays > 16 else 1):
        body.append(_text(xy(day, 0)[0], height - bottom + 16, day, size=10))
    for i, (group, values) in enumerate(series.items()):
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(d + 1, v)
                                                          for d, v in enumerate(values)))
        dash = f' stroke-dasharray="{DASH[group]}"' if DASH.get(group) else ""
        body.append(f'<polyline points="{points}" fill="none" stroke="{COLOURS[group]}" '
                    f'stroke-width="2"{dash}/>')
        for d, v in enumerate(values):
            x, y = xy(d + 1, v)
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{COLOURS[group]}">'
                        f'<title>{month}-{d + 1:02d}: {v} {group}s</title></circle>')
        ly = top_pad + 14 + i * 18
        body.append(f'<line x1="{width - right + 12}" x2="{width - right + 36}" y1="{ly}" '
                    f'y2="{ly}" stroke="{COLOURS[group]}" stroke-width="2"{dash}/>')
        body.append(_text(width - right + 42, ly + 4, group + "s", "start", 11))
    return _svg(width, height, f"Unique visitors per day in {month}, subscribers and "
                "occasional members", body)


def month_bars(year: list[dict[str, Any]], target: list[int | None]) -> Markup:
    """Active subscribers and occasional members per month, with the subscribers' target
    band."""
    left, right, top_pad, bottom = 40, 150, 12, 36
    width, height = 720, 240
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    values = [m[g]["active"] for m in year for g in ("subscriber", "occasional")]
    top, ticks = _scale(1.1 * max([*values, *(t for t in target if t is not None)], default=0))
    slot = plot_w / max(1, len(year))
    bar = slot * 0.36

    def y(v: float) -> float:
        return top_pad + plot_h - v / top * plot_h

    body = []
    lo, hi = target
    if lo is not None or hi is not None:
        y1, y2 = y(hi if hi is not None else lo), y(lo if lo is not None else 0)
        body.append(f'<rect x="{left}" y="{y1:.1f}" width="{plot_w}" '
                    f'height="{max(2.0, y2 - y1):.1f}" fill="#e3ecd9" stroke="#4d7a2a" '
                    f'stroke-dasharray="4 3"><title>target: {lo if lo is not None else "…"} to '
                    f'{hi if hi is not None else "…"} subscribers</title></rect>')
    for t in ticks:
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                    f'stroke="{GRID}" stroke-width="0.5"/>')
        body.append(_text(left - 6, y(t) + 4, f"{t:g}", "end", 10))
    for i, m in enumerate(year):
        x0 = left + i * slot + slot * 0.14
        for j, g in enumerate(("subscriber", "occasional")):
            v = m[g]["active"]
            x = x0 + j * bar
            opacity = ' fill-opacity="0.55"' if g == "occasional" else ""
            body.append(f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{bar - 1:.1f}" '
                        f'height="{y(0) - y(v):.1f}" fill="{COLOURS[g]}"{opacity}>'
                        f'<title>{m["month"]}: {v} active {g}s</title></rect>')
        body.append(_text(left + i * slot + slot / 2, height - bottom + 16, m["month"][2:],
                          size=10))
    for j, g in enumerate(("subscriber", "occasional")):
        ly = top_pad + 10 + j * 18
        opacity = ' fill-opacity="0.55"' if g == "occasional" else ""
        body.append(f'<rect x="{width - right + 12}" y="{ly - 8}" width="14" height="10" '
                    f'fill="{COLOURS[g]}"{opacity}/>')
        body.append(_text(width - right + 32, ly + 1, f"active {g}s", "start", 11))
    if lo is not None or hi is not None:
        ly = top_pad + 10 + 2 * 18
        body.append(f'<rect x="{width - right + 12}" y="{ly - 8}" width="14" height="10" '
                    'fill="#e3ecd9" stroke="#4d7a2a" stroke-dasharray="4 3"/>')
        body.append(_text(width - right + 32, ly + 1, "subscribers' target", "start", 11))
    return _svg(width, height, "Active subscribers and occasional members over twelve months, "
                "against the subscribers' target", body)
