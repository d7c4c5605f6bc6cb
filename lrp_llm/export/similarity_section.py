"""BiLRP section: the token-pair interaction matrix (SVG heatmap) and a two-column token
view with lines between the strongest pairs (SVG).

Input: a :class:`~lrp_llm.results.similarity.SimilarityExplanation` or its ``to_dict()``: ``tokens_a``,
``tokens_b``, ``interactions`` (rows = tokens of a, columns = tokens of b),
``special_a``/``special_b``, ``similarity``, ``dot``, ``interaction_sum``, ``mode``,
``text_a``, ``text_b``, ``method``, ``rules``, ``pooling``, ``meta`` (``rank`` when ranked).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lrp_llm.export.common import as_dict, esc, fmt, info_table, legend
from lrp_llm.export.grid_svg import CHAR_W, grid_svg, short

CSS = (
    "svg .lpos{stroke:#d43d3d}svg .lneg{stroke:#3d6fd4;"
    "stroke-dasharray:5 3}svg .lpos,svg .lneg{fill:none;stroke-linecap:round;opacity:.8}"
    "svg .lpos:hover,svg .lneg:hover{opacity:1}.pair-views{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}"
    ".scroll{overflow-x:auto;max-width:100%}"
)

ROW = 18  # px per token in the two-column view


def _pairs(m: np.ndarray, keep: np.ndarray, k: int, sign: int) -> list[tuple[int, int, float]]:
    flat = np.where(keep, m * sign, -np.inf).ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    n_b = m.shape[1]
    return [(int(f // n_b), int(f % n_b), float(m.flat[f])) for f in order if np.isfinite(flat[f]) and flat[f] > 0]


def pairs_svg(d: dict[str, Any], k_pos: int = 10, k_neg: int = 3) -> str:
    """Tokens of a (left) and b (right), one per line, joined by the ``k_pos`` strongest
    positive (solid red) and ``k_neg`` most negative (dashed blue) interactions; line
    width follows |interaction|."""
    ta, tb = [str(t) for t in d["tokens_a"]], [str(t) for t in d["tokens_b"]]
    m = np.asarray(d["interactions"], dtype=np.float64).reshape(len(ta), len(tb))
    sa = np.asarray(d.get("special_a") or [False] * len(ta), dtype=bool)
    sb = np.asarray(d.get("special_b") or [False] * len(tb), dtype=bool)
    keep = ~sa[:, None] & ~sb[None, :] & np.isfinite(m)
    pairs = _pairs(m, keep, k_pos, 1) + _pairs(m, keep, k_neg, -1)
    la = [short(t, 20) for t in ta]
    lb = [short(t, 20) for t in tb]
    wa = CHAR_W * max((len(s) for s in la), default=1) + 10
    wb = CHAR_W * max((len(s) for s in lb), default=1) + 10
    gap = 220
    width = wa + gap + wb
    height = ROW * max(len(ta), len(tb), 1) + 24
    peak = max((abs(v) for _, _, v in pairs), default=0.0)
    parts = [
        f'<svg class="pairs" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        'role="img" aria-label="strongest token pairs">',
        f'<text x="{wa - 6:.1f}" y="12" text-anchor="end" font-weight="bold">a</text>',
        f'<text x="{wa + gap + 6:.1f}" y="12" font-weight="bold">b</text>',
    ]
    for i, s in enumerate(la):
        dim = ' fill="#999"' if sa[i] else ""
        parts.append(
            f'<text x="{wa - 6:.1f}" y="{24 + ROW * i + 12}" text-anchor="end"{dim}><title>{esc(ta[i])}</title>'
            f"{esc(s)}</text>"
        )
    for j, s in enumerate(lb):
        dim = ' fill="#999"' if sb[j] else ""
        parts.append(
            f'<text x="{wa + gap + 6:.1f}" y="{24 + ROW * j + 12}"{dim}><title>{esc(tb[j])}</title>{esc(s)}</text>'
        )
    for i, j, v in pairs:
        w = 1 + 5 * abs(v) / peak if peak > 0 else 1
        y1, y2 = 24 + ROW * i + 8, 24 + ROW * j + 8
        cls = "lpos" if v > 0 else "lneg"
        x1, x2 = wa, wa + gap
        parts.append(
            f'<path class="{cls}" stroke-width="{w:.2f}" d="M{x1:.1f} {y1} C{x1 + gap / 2:.1f} {y1} '
            f'{x2 - gap / 2:.1f} {y2} {x2:.1f} {y2}"><title>{esc(f"{ta[i]} ~ {tb[j]}: {v:+.5g}")}</title></path>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render(explanation: Any, heading: str | None = None) -> str:
    """One explanation: facts, the interaction matrix, the strongest pairs."""
    d = as_dict(explanation)
    ta, tb = [str(t) for t in d["tokens_a"]], [str(t) for t in d["tokens_b"]]
    m = np.asarray(d["interactions"], dtype=np.float64).reshape(len(ta), len(tb))
    total = float(d.get("interaction_sum", m.sum()))
    mode = str(d.get("mode", "cosine"))
    explained = float(d["similarity"] if mode == "cosine" else d["dot"])
    conservation = total / explained if explained else float("nan")
    meta = d.get("meta") or {}
    rank = meta.get("rank")
    svg, scale = grid_svg(
        m,
        ta,
        tb,
        lambda r, c, v: f"{ta[r]} ~ {tb[c]}: {v:+.5g}",
        row_dim=d.get("special_a") or None,
        col_dim=d.get("special_b") or None,
        label="interaction matrix",
    )
    heading = heading or ("Similarity" if rank is None else f"#{int(rank)}: similarity")
    facts = info_table(
        [
            ("a", d.get("text_a", "")),
            ("b", d.get("text_b", "")),
            ("cosine similarity", fmt(d["similarity"])),
            ("dot product", fmt(d["dot"])),
            ("\u03a3 interactions", f"{fmt(total)} ({fmt(conservation, 3)} of the {mode})"),
        ]
    )
    return (
        f"<section class='similarity'><h2>{esc(heading)}</h2>{facts}"
        "<div class='pair-views'>"
        f"<div><h3>Interactions (rows: tokens of a, columns: tokens of b)</h3>"
        f"{legend('max |interaction|', scale=scale)}<div class='scroll'>{svg}</div></div>"
        f"<div><h3>Strongest pairs</h3><p class='note'>Red: adds to the similarity; dashed blue: takes away; "
        f"grey: special tokens (not paired).</p><div class='scroll'>{pairs_svg(d)}</div></div>"
        "</div></section>"
    )


__all__ = ["CSS", "pairs_svg", "render"]
