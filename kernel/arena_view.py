"""How the kernel draws the arena's leaderboard: an HTML table, an inline SVG of the ratings with their 95%
intervals (no matplotlib: a notebook shows it as it is, and it stays small in the saved file), and plain text."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from llmspell.arena import BOARD_HEADERS, board_rows
from llmspell.ratings import Standing

#: the plot's geometry in pixels: one row per model, the axis below them
_ROW = 22
_TOP = 12
_AXIS = 40
_PLOT_WIDTH = 360
_RIGHT = 24
#: a rough width of one character of the plot's 12 px font, to leave room for the longest name on the left
_CHAR = 7
_NAME_CHARS = 40


def _short(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…"


def leaderboard_text(standings: Sequence[Standing]) -> str:
    """The leaderboard as aligned plain text (the text/plain of the display)."""
    table = [list(BOARD_HEADERS), *board_rows(standings)]
    widths = [max(len(r[i]) for r in table) for i in range(len(BOARD_HEADERS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)


def leaderboard_table(standings: Sequence[Standing]) -> str:
    """The leaderboard as an HTML table, every name escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in BOARD_HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in board_rows(standings))
    return f'<table class="llmspell-arena"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values (steps of 1, 2 or 5 times a power of ten) from ``low`` to ``high``."""
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def ratings_svg(standings: Sequence[Standing]) -> str:
    """The ratings as an inline SVG: per model one horizontal line from the interval's low end to its high end,
    a dot at the rating and the name on the left, with a rating axis below."""
    if not standings:
        return ""
    low = min(s.low for s in standings)
    high = max(s.high for s in standings)
    # a margin on each side, and some width even when every rating is the same
    pad = max((high - low) * 0.08, 10.0)
    low, high = low - pad, high + pad
    left = _CHAR * max(len(_short(s.model)) for s in standings) + 16
    width = left + _PLOT_WIDTH + _RIGHT
    axis_y = _TOP + _ROW * len(standings)
    height = axis_y + _AXIS

    def x(value: float) -> float:
        return left + (value - low) / (high - low) * _PLOT_WIDTH

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="llmspell-arena-plot" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" role="img"'
        ' aria-label="ratings with 95% intervals">'
    ]
    for n, s in enumerate(standings):
        y = _TOP + _ROW * n + _ROW / 2
        name = escape(_short(s.model))
        title = escape(f"{s.model}: {s.rating:.0f} (95% {s.low:.0f} to {s.high:.0f}, {s.votes} votes)")
        parts.append(
            f"<g><title>{title}</title>"
            f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" fill="currentColor">{name}</text>'
            f'<line class="interval" x1="{x(s.low):.1f}" y1="{y:.1f}" x2="{x(s.high):.1f}" y2="{y:.1f}"'
            ' stroke="#4c78a8" stroke-width="3" stroke-linecap="round"/>'
            f'<circle cx="{x(s.rating):.1f}" cy="{y:.1f}" r="5" fill="#e45756"/></g>'
        )
    parts.append(
        f'<line class="axis" x1="{left}" y1="{axis_y}" x2="{left + _PLOT_WIDTH}" y2="{axis_y}"'
        ' stroke="currentColor" stroke-width="1"/>'
    )
    for tick in _ticks(low, high):
        tx = x(tick)
        parts.append(
            f'<line class="tick" x1="{tx:.1f}" y1="{axis_y}" x2="{tx:.1f}" y2="{axis_y + 5}" stroke="currentColor"/>'
            f'<text x="{tx:.1f}" y="{axis_y + 18}" text-anchor="middle" fill="currentColor">{tick:.0f}</text>'
        )
    parts.append(
        f'<text x="{left + _PLOT_WIDTH / 2:.1f}" y="{axis_y + 32}" text-anchor="middle" fill="currentColor"'
        ' font-size="11">rating (dot) and 95% interval (line)</text></svg>'
    )
    return "".join(parts)


def leaderboard_html(standings: Sequence[Standing], heading: str = "") -> str:
    """The whole leaderboard display: an optional heading, the table, then the plot."""
    head = f"<p><strong>{escape(heading)}</strong></p>" if heading else ""
    return f"<div>{head}{leaderboard_table(standings)}{ratings_svg(standings)}</div>"
