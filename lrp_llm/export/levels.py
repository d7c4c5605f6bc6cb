"""Colour levels of relevance: the one rounding the HTML report, its script and the terminal share.

A value is shown on a symmetric scale of ``scale`` (usually the largest |relevance| of what is
shown) in ``LEVELS`` steps on each side of zero::

    level = sign(x) * floor(|x| + 0.5),   x = clip(value / scale, -1, 1) * LEVELS

Half-steps round away from zero, so a value and its negation get the same strength
(``0.25 -> 3`` and ``-0.25 -> -3`` on a scale of 1). :data:`LEVEL_JS` is the same rule for
the report's inline script, computed in the same floating-point order, so static markup,
recoloured page and terminal agree on every value. No torch, no Textual: both sides import it.
"""

from __future__ import annotations

import math

LEVELS = 10  # colour steps on each side of 0


def colour_level(value: float, scale: float) -> int:
    """Integer colour level in [-LEVELS, LEVELS] of ``value`` on a symmetric scale of ``scale``
    (0 when ``scale`` is not positive or either number is not finite)."""
    if not scale > 0 or not math.isfinite(scale) or not math.isfinite(value):
        return 0
    x = max(-1.0, min(1.0, value / scale)) * LEVELS
    k = int(math.floor(abs(x) + 0.5))
    return k if x >= 0 else -k


def display_scale(values, apart=()) -> float:
    """The colour scale of a heatmap: the largest finite |value| outside ``apart`` (indices of special and
    chat-template tokens, whose values can dwarf the rest: a first token that soaks up relevance); the
    largest over all values when every value is apart. 0.0 when there is none."""
    apart = set(apart)
    finite = [(i, abs(float(v))) for i, v in enumerate(values) if math.isfinite(float(v))]
    kept = [v for i, v in finite if i not in apart]
    return max(kept or [v for _, v in finite], default=0.0)


# JavaScript twin of colour_level (ES5, for the report's inline script).
LEVEL_JS = (
    "function lvl(v, s) {\n"
    "    if (!(s > 0) || !isFinite(s) || !isFinite(v)) return 0;\n"
    f"    var x = Math.max(-1, Math.min(1, v / s)) * {LEVELS}, k = Math.floor(Math.abs(x) + 0.5);\n"
    "    return x >= 0 ? k : -k;\n"
    "  }"
)

__all__ = ["LEVELS", "LEVEL_JS", "colour_level"]
