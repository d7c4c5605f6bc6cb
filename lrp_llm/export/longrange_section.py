"""Long-range section: relevance by token distance (inline SVG histogram) and the far tokens.

Rendered from a plain dict of this form (:func:`from_longrange` makes one from the
library's :class:`~lrp_llm.analyses.longrange.LongRange`, :func:`profile` one pooled over every
answer token of an :class:`~lrp_llm.results.attribution.Attribution`):

``edges``
    bin boundaries in tokens, one more than the bins: bin ``k`` holds distances
    ``edges[k] <= d < edges[k + 1]`` (distance 1 = the token right before the target).
``positive``, ``negative``
    per bin, the sum of positive relevance and of |negative relevance|. Instead of these
    two, ``absolute`` (sum of |relevance|) and ``signed`` (sum of relevance) are accepted.
``counts`` (optional)
    (token, target) pairs per bin.
``far``, ``far_share``
    the far threshold in tokens and the share of all |relevance| more than ``far`` tokens
    back.
``far_tokens``
    list of ``{"token", "index", "distance", "value"}`` (optionally ``"target"``: the
    answer token it was relevant for), the most relevant far tokens, largest |value| first.
``share_beyond`` (optional)
    ``{distance: share}``, e.g. beyond 100 and 1000 tokens.
``farthest`` (optional)
    ``{"index", "distance", "token", "fraction"}``: the farthest token whose |relevance| is at
    least ``fraction`` of the largest.
``title`` (optional)
    a heading.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lrp_llm.analyses import longrange
from lrp_llm.export.common import as_dict, esc, fmt
from lrp_llm.results.attribution import Attribution

CSS = (
    "svg .pos{fill:#d43d3d}svg .neg{fill:#3d6fd4}svg .far{stroke:#a40;stroke-dasharray:4 3;stroke-width:1.5}"
    "svg .farlabel{fill:#a40}"
)

DEFAULT_FAR = 32
TOP_K = 8


def _pad(values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n)
    out[: len(values)] = values
    return out


def profile(a: Attribution, far: int = DEFAULT_FAR, k: int = TOP_K) -> dict[str, Any]:
    """Relevance by log2 distance pooled over every explained token of ``a`` (decoder side),
    built from :mod:`lrp_llm.analyses.longrange` per target. Distance of input token ``j`` for a
    target at position ``p`` is ``p - j``; "far" means more than ``far`` tokens back."""
    max_p = max((len(t.relevance) for t in a.targets), default=0)
    edges = longrange.log_edges(max(max_p, 1))
    n = len(edges) - 1
    absolute, signed, counts = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
    total = far_abs = 0.0
    candidates = []
    for t in a.targets:
        r = np.asarray(t.relevance, dtype=np.float64)
        if not len(r):
            continue
        bins = longrange.relevance_by_distance(r)
        absolute += _pad(bins.absolute, n)
        signed += _pad(bins.signed, n)
        counts += _pad(bins.counts, n).astype(np.int64)
        mass = float(np.abs(r).sum())
        total += mass
        far_abs += longrange.share_beyond(r, far) * mass
        for f in longrange.far_tokens(r, a.tokens, min_distance=far, k=k):
            if f.relevance != 0:
                candidates.append((abs(f.relevance), f, t.token))
    candidates.sort(key=lambda c: -c[0])
    return {
        "edges": edges,
        "positive": ((absolute + signed) / 2).tolist(),
        "negative": ((absolute - signed) / 2).tolist(),
        "counts": counts.tolist(),
        "far": int(far),
        "far_share": far_abs / total if total > 0 else 0.0,
        "far_tokens": [
            {"token": f.text, "index": f.index, "distance": f.distance, "value": f.relevance, "target": target}
            for _, f, target in candidates[:k]
        ],
    }


def from_longrange(lr: Any, tokens: list[str] | None = None) -> dict[str, Any]:
    """The section's dict from a :class:`~lrp_llm.analyses.longrange.LongRange` (one target)."""
    b = lr.bins
    absolute, signed = np.asarray(b.absolute, dtype=np.float64), np.asarray(b.signed, dtype=np.float64)
    far = int(lr.far_distance)
    d: dict[str, Any] = {
        "edges": [int(e) for e in b.edges],
        "positive": ((absolute + signed) / 2).tolist(),
        "negative": ((absolute - signed) / 2).tolist(),
        "counts": [int(c) for c in b.counts],
        "far": far,
        "far_share": lr.share_beyond.get(far),
        "far_tokens": [
            {
                "token": f.text if f.text is not None else "",
                "index": f.index,
                "distance": f.distance,
                "value": f.relevance,
            }
            for f in lr.far_tokens
            if f.relevance != 0
        ],
        "share_beyond": {int(k): float(v) for k, v in lr.share_beyond.items() if int(k) != far},
    }
    if lr.farthest_index is not None:
        j = int(lr.farthest_index)
        d["farthest"] = {
            "index": j,
            "distance": lr.farthest_distance,
            "token": tokens[j] if tokens is not None and j < len(tokens) else None,
            "fraction": lr.fraction,
        }
    return d


def per_target(a: Attribution, far: int = DEFAULT_FAR, k: int = TOP_K) -> list[dict[str, Any]]:
    """One section dict per answer token of ``a`` (via :func:`lrp_llm.analyses.longrange.summarize`)."""
    out = []
    for t in a.targets:
        tokens = a.tokens[: t.position]
        lr = longrange.summarize(t.relevance, tokens, thresholds=(far, *longrange.THRESHOLDS), k=k, far_distance=far)
        out.append(from_longrange(lr, tokens))
    return out


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
        first = int(far) + 1  # "far" is more than ``far`` tokens back
        b = int(np.searchsorted(edges, first, side="right") - 1)
        if 0 <= b < n:
            frac = (first - edges[b]) / max(edges[b + 1] - edges[b], 1)
            x = left + (b + frac) * bar_w
            parts.append(
                f'<line class="far" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}"/>'
                f'<text class="farlabel" x="{x + 3:.1f}" y="{top + 10}">&gt; {int(far)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def as_section_dict(result: Any) -> dict[str, Any]:
    """A :class:`~lrp_llm.analyses.longrange.LongRange`, this module's dict, or an object whose
    ``to_dict()`` gives that dict."""
    if hasattr(result, "bins") and hasattr(result, "far_tokens") and hasattr(result, "share_beyond"):
        return from_longrange(result)
    return as_dict(result)


def block(result: Any, *, ident: str | None = None, hidden: bool = False, heading: str | None = None) -> str:
    """Histogram, far share, farthest relevant token and far-token table as one ``<div>``."""
    d = as_section_dict(result)
    far = d.get("far")
    share = d.get("far_share")
    rows = []
    for f in d.get("far_tokens", []):
        target = f"<td class='mono'>{esc(repr(f['target']))}</td>" if "target" in f else ""
        rows.append(
            f"<tr><td class='mono'>{esc(repr(f['token']))}</td><td class='num'>{int(f['index'])}</td>"
            f"<td class='num'>{int(f['distance'])}</td><td class='num'>{esc(fmt(f['value']))}</td>{target}</tr>"
        )
    facts = []
    if far is not None and share is not None:
        facts.append(
            f"{float(share):.1%} of all |relevance| lies more than {int(far)} tokens before the explained token "
            "(right of the dashed line)"
        )
    for dist, sh in sorted((int(k), float(v)) for k, v in (d.get("share_beyond") or {}).items()):
        facts.append(f"{sh:.1%} more than {dist} tokens back")
    farthest = d.get("farthest")
    if farthest:
        tok = f" {farthest['token']!r}" if farthest.get("token") is not None else ""
        facts.append(
            f"farthest token with at least {float(farthest['fraction']):.0%} of the largest |relevance|:{tok} "
            f"at position {int(farthest['index'])}, {int(farthest['distance'])} tokens back"
        )
    with_target = any("target" in f for f in d.get("far_tokens", []))
    head = "<th>for answer token</th>" if with_target else ""
    table = (
        "<table class='list'><tr><th>far token</th><th>position</th><th>distance</th><th>relevance</th>"
        f"{head}</tr>{''.join(rows)}</table>"
        if rows
        else "<p class='note'>No relevant token lies that far back.</p>"
    )
    ident_attr = f" id='{esc(ident)}'" if ident else ""
    title = heading or d.get("title")
    return (
        f"<div class='lr'{ident_attr}{' hidden' if hidden else ''}>"
        f"{f'<h3>{esc(title)}</h3>' if title else ''}{histogram_svg(d)}"
        f"{''.join(f'<p>{esc(x)}</p>' for x in facts)}{table}</div>"
    )


INTRO = (
    "<p class='note'>Share of all |relevance| per distance bin (powers of two; distance 1 is the token right "
    "before the explained one); red: positive, blue: negative. Hover a bar for its numbers.</p>"
)


def render(result: Any) -> str:
    """A whole long-range section for one result (see the module docstring for the input)."""
    return f"<section id='longrange'><h2>Long range: relevance by token distance</h2>{INTRO}{block(result)}</section>"


def attribution_section(a: Attribution, far: int = DEFAULT_FAR, k: int = TOP_K, max_targets: int = 256) -> str:
    """The section of an explanation: the pooled view (``lr-sum``) and one block per answer
    token (``lr-tN``, hidden until the token heatmap's script selects it)."""
    from lrp_llm.export.token_section import target_title

    n_t = len(a.targets)
    blocks = []
    if n_t > 1:
        blocks.append(block(profile(a, far, k), ident="lr-sum", heading=f"all {n_t} answer tokens, pooled"))
    if n_t <= max_targets:
        for i, d in enumerate(per_target(a, far, k)):
            blocks.append(block(d, ident=f"lr-t{i}", hidden=n_t > 1, heading=target_title(a, i)))
    else:
        blocks.append(f"<p class='note'>Per answer token only for up to {max_targets} answer tokens.</p>")
    return f"<section id='longrange'><h2>Long range: relevance by token distance</h2>{INTRO}{''.join(blocks)}</section>"


__all__ = [
    "CSS",
    "DEFAULT_FAR",
    "attribution_section",
    "block",
    "from_longrange",
    "histogram_svg",
    "per_target",
    "profile",
    "render",
]
