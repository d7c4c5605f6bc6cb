"""Long-range section: relevance by token distance (inline SVG histogram) and the far tokens.

Input: a plain dict (or any object with ``to_dict()`` giving one) of this form; the
library's long-range results are rendered through it:

``edges``
    bin boundaries in tokens, one more than the bins: bin ``k`` holds distances
    ``edges[k] <= d < edges[k + 1]`` (distance 1 = the token right before the target).
``positive``, ``negative``
    per bin, the sum of positive relevance and of |negative relevance|. Instead of these
    two, ``absolute`` (sum of |relevance|) and ``signed`` (sum of relevance) are accepted.
``counts`` (optional)
    (token, target) pairs per bin.
``far``, ``far_share``
    the far threshold in tokens and the share of all |relevance| at distance >= ``far``.
``far_tokens``
    list of ``{"token", "index", "distance", "value"}`` (optionally ``"target"``: the
    answer token it was relevant for), the most relevant far tokens, largest |value| first.
``title`` (optional)
    a heading for the section.

:func:`profile` builds this dict from an :class:`~lrp_llm.attribution.Attribution`,
pooling every explained answer token.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..attribution import Attribution
from .common import as_dict, esc, fmt

CSS = "svg .pos{fill:#d43d3d}svg .neg{fill:#3d6fd4}svg .far{stroke:#a40;stroke-dasharray:4 3;stroke-width:1.5}"

DEFAULT_FAR = 32


def log_edges(max_distance: int) -> list[int]:
    """1, 2, 4, ... up to the first power of two above ``max_distance``."""
    edges = [1]
    while edges[-1] <= max_distance:
        edges.append(edges[-1] * 2)
    return edges


def profile(a: Attribution, far: int = DEFAULT_FAR, k: int = 12) -> dict[str, Any]:
    """Relevance by log2 distance, pooled over every explained token of ``a`` (decoder side).

    Distance of input token ``j`` for a target at position ``p`` is ``p - j``.
    """
    max_p = max((len(t.relevance) for t in a.targets), default=0)
    edges = log_edges(max(max_p, 1))
    n = len(edges) - 1
    pos = np.zeros(n)
    neg = np.zeros(n)
    counts = np.zeros(n, dtype=np.int64)
    total = 0.0
    far_abs = 0.0
    candidates: list[tuple[float, int, int, int]] = []  # (|value|, target, index, distance)
    for ti, t in enumerate(a.targets):
        r = np.asarray(t.relevance, dtype=np.float64)
        p = len(r)
        if p == 0:
            continue
        distance = t.position - np.arange(p)
        bins = np.searchsorted(edges, distance, side="right") - 1
        pos += np.bincount(bins, weights=np.clip(r, 0, None), minlength=n)[:n]
        neg += np.bincount(bins, weights=np.clip(-r, 0, None), minlength=n)[:n]
        counts += np.bincount(bins, minlength=n)[:n]
        total += float(np.abs(r).sum())
        is_far = distance >= far
        far_abs += float(np.abs(r[is_far]).sum())
        idx = np.flatnonzero(is_far & (r != 0))
        if idx.size:
            best = idx[np.argsort(-np.abs(r[idx]), kind="stable")[:k]]
            candidates += [(abs(float(r[j])), ti, int(j), int(distance[j])) for j in best]
    candidates.sort(key=lambda c: -c[0])
    far_tokens = [
        {
            "token": a.tokens[j],
            "index": j,
            "distance": d,
            "value": float(a.targets[ti].relevance[j]),
            "target": a.targets[ti].token,
        }
        for _, ti, j, d in candidates[:k]
    ]
    return {
        "edges": edges,
        "positive": pos.tolist(),
        "negative": neg.tolist(),
        "counts": counts.tolist(),
        "far": int(far),
        "far_share": far_abs / total if total > 0 else 0.0,
        "far_tokens": far_tokens,
    }


def _bins(d: dict[str, Any]) -> tuple[list[int], np.ndarray, np.ndarray]:
    edges = [int(e) for e in d["edges"]]
    if "positive" in d:
        pos = np.asarray(d["positive"], dtype=np.float64)
        neg = np.asarray(d["negative"], dtype=np.float64)
    else:
        absolute = np.asarray(d["absolute"], dtype=np.float64)
        signed = np.asarray(d.get("signed", absolute), dtype=np.float64)
        pos, neg = (absolute + signed) / 2, (absolute - signed) / 2
    n = len(edges) - 1
    if len(pos) != n or len(neg) != n:
        raise ValueError(f"long-range data: {len(edges)} edges need {n} bins, got {len(pos)} and {len(neg)}")
    return edges, np.nan_to_num(pos), np.nan_to_num(neg)


def histogram_svg(d: dict[str, Any], width: int = 640, height: int = 200) -> str:
    """Stacked bars (red: positive, blue: |negative|) of the share of all |relevance| per bin."""
    edges, pos, neg = _bins(d)
    n = len(pos)
    total = float(pos.sum() + neg.sum())
    counts = d.get("counts") or [None] * n
    left, bottom, top = 44, 34, 14
    plot_w, plot_h = width - left - 10, height - bottom - top
    bar_w = plot_w / max(n, 1)
    peak = max(float((pos + neg).max()) / total if total > 0 and n else 0.0, 1e-12)
    parts = [
        f'<svg class="hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="relevance by distance">',
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>',
        f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{peak:.0%}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for b in range(n):
        share_p = pos[b] / total if total > 0 else 0.0
        share_n = neg[b] / total if total > 0 else 0.0
        hp, hn = plot_h * share_p / peak, plot_h * share_n / peak
        x = left + b * bar_w + 1
        y0 = top + plot_h
        lo, hi = edges[b], edges[b + 1] - 1
        span = f"{lo}" if lo == hi else f"{lo}\u2013{hi}"
        count = f", {counts[b]} token-target pairs" if counts[b] is not None else ""
        tip = f"distance {span}: {share_p + share_n:.1%} of |relevance| (+{fmt(pos[b])} / \u2212{fmt(neg[b])}){count}"
        parts.append(
            f"<g><title>{esc(tip)}</title>"
            f'<rect class="pos" x="{x:.1f}" y="{y0 - hp:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{hp:.1f}"/>'
            f'<rect class="neg" x="{x:.1f}" y="{y0 - hp - hn:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{hn:.1f}"/>'
            f'<rect x="{x:.1f}" y="{top}" width="{max(bar_w - 2, 1):.1f}" height="{plot_h}" fill="transparent"/></g>'
        )
        if n <= 16 or b % 2 == 0:
            parts.append(f'<text x="{left + b * bar_w:.1f}" y="{y0 + 14}">{lo}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">distance (tokens)</text>')
    far = d.get("far")
    if far is not None and n:
        b = int(np.searchsorted(edges, int(far), side="right") - 1)
        if 0 <= b < n:
            frac = (int(far) - edges[b]) / max(edges[b + 1] - edges[b], 1)
            x = left + (b + frac) * bar_w
            parts.append(f'<line class="far" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}"/>')
    parts.append("</svg>")
    return "".join(parts)


def render(result: Any) -> str:
    """The long-range section of a report (see the module docstring for the input)."""
    d = as_dict(result)
    title = d.get("title") or "Long range: relevance by token distance"
    far = d.get("far")
    share = d.get("far_share")
    rows = []
    for f in d.get("far_tokens", []):
        target = f"<td class='mono'>{esc(repr(f['target']))}</td>" if "target" in f else "<td></td>"
        rows.append(
            f"<tr><td class='mono'>{esc(repr(f['token']))}</td><td class='num'>{int(f['index'])}</td>"
            f"<td class='num'>{int(f['distance'])}</td><td class='num'>{esc(fmt(f['value']))}</td>{target}</tr>"
        )
    far_line = ""
    if far is not None and share is not None:
        far_line = (
            f"<p>{float(share):.1%} of all |relevance| lies {int(far)} or more tokens before the explained token "
            "(dashed line).</p>"
        )
    table = (
        "<table class='list'><tr><th>far token</th><th>position</th><th>distance</th><th>relevance</th>"
        f"<th>for answer token</th></tr>{''.join(rows)}</table>"
        if rows
        else "<p class='note'>No token lies that far back.</p>"
    )
    return (
        f"<section id='longrange'><h2>{esc(title)}</h2>"
        "<p class='note'>Share of all |relevance| per distance bin (powers of two); red: positive, "
        "blue: negative. Hover a bar for its numbers.</p>"
        f"{histogram_svg(d)}{far_line}{table}</section>"
    )


__all__ = ["CSS", "DEFAULT_FAR", "histogram_svg", "log_edges", "profile", "render"]
