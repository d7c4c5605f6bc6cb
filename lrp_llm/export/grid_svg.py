"""A labelled heatmap grid as inline SVG: one ``<rect>`` per cell with a colour class and a
hover ``<title>``; used by the BiLRP interaction matrix and the patching grids."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from lrp_llm.export.common import esc, level_class
from lrp_llm.export.levels import colour_level

CHAR_W = 6.8  # px per character of the 11px monospace labels


def short(label: str, n: int = 18) -> str:
    """A label cut to ``n`` characters (the full text stays in the hover title)."""
    label = label.replace("\n", "\u21b5")
    return label if len(label) <= n else label[: n - 1] + "\u2026"


def grid_svg(
    values: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    tip: Callable[[int, int, float], str],
    *,
    cell: float | None = None,
    max_width: int = 900,
    row_dim: Sequence[bool] | None = None,
    col_dim: Sequence[bool] | None = None,
    label: str = "heatmap",
) -> tuple[str, float]:
    """SVG of ``values`` (rows x columns) on a symmetric colour scale; returns (svg, scale).

    NaN cells are light grey. ``tip(r, c, v)`` gives each cell's hover text.
    """
    v = np.asarray(values, dtype=np.float64)
    n_r, n_c = v.shape
    finite = np.abs(v[np.isfinite(v)])
    scale = float(finite.max()) if finite.size else 0.0
    rows = [short(str(s)) for s in row_labels]
    cols = [short(str(s)) for s in col_labels]
    left = 8 + CHAR_W * max((len(s) for s in rows), default=1)
    top = 8 + CHAR_W * max((len(s) for s in cols), default=1)
    if cell is None:
        cell = max(6.0, min(22.0, (max_width - left) / max(n_c, 1)))
    width, height = left + cell * n_c + 4, top + cell * n_r + 4
    parts = [
        f'<svg class="grid" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{esc(label)}">'
    ]
    for r, name in enumerate(rows):
        dim = ' fill="#999"' if row_dim is not None and row_dim[r] else ""
        y = top + cell * r + cell / 2 + 4
        parts.append(f'<text x="{left - 4:.1f}" y="{y:.1f}" text-anchor="end"{dim}>{esc(name)}</text>')
    for c, name in enumerate(cols):
        dim = ' fill="#999"' if col_dim is not None and col_dim[c] else ""
        x = left + cell * c + cell / 2 + 4
        parts.append(f'<text transform="translate({x:.1f},{top - 4:.1f}) rotate(-90)"{dim}>{esc(name)}</text>')
    for r in range(n_r):
        for c in range(n_c):
            val = float(v[r, c])
            cls = level_class(colour_level(val, scale)) if math.isfinite(val) else "nan"
            parts.append(
                f'<rect class="{cls}" x="{left + cell * c:.1f}" y="{top + cell * r:.1f}" width="{cell:.1f}" '
                f'height="{cell:.1f}"><title>{esc(tip(r, c, val))}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts), scale


__all__ = ["grid_svg", "short"]
