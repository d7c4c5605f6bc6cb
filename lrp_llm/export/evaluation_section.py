"""Faithfulness section: the summary table of an
:class:`~lrp_llm.analyses.evaluate.Evaluation`, the mean MoRF / LeRF curves of each method
as inline SVG, and the per-item scores (no script)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lrp_llm.export.common import esc

CSS = (
    ".plots{display:flex;flex-wrap:wrap;gap:1em}.plot{border:1px solid #eee;padding:.3em}"
    ".plot h3{font-size:.95em;margin:.2em .4em}svg.curves text{font-size:10px;fill:#555}"
)


def _fixed(x: float | None, digits: int = 3) -> str:
    """Fixed decimals so the table's columns line up; '–' for missing or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def _plot(
    fractions: Sequence[float],
    morf: Sequence[float],
    lerf: Sequence[float],
    lo: float,
    hi: float,
    width: int = 300,
    height: int = 180,
) -> str:
    """MoRF (red) and LeRF (blue) curves of one method, the area between them shaded; y from ``lo`` to ``hi``."""
    pad = 28
    span = hi - lo if hi > lo else 1.0

    def pt(x: float, y: float) -> str:
        px = pad + x * (width - pad - 8)
        py = height - pad - (y - lo) / span * (height - pad - 8)
        return f"{px:.1f},{py:.1f}"

    def line(ys: Sequence[float], colour: str) -> str:
        points = " ".join(pt(float(x), float(y)) for x, y in zip(fractions, ys))
        return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'

    area = " ".join(pt(float(x), float(y)) for x, y in zip(fractions, lerf))
    area += " " + " ".join(pt(float(x), float(y)) for x, y in reversed(list(zip(fractions, morf))))
    axes = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - 8}" y2="{height - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="8" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="{pad}" y="{height - 10}">0</text><text x="{width - 30}" y="{height - 10}">100 %</text>'
        f'<text x="2" y="14">{hi:.1f}</text><text x="2" y="{height - pad}">{lo:.1f}</text>'
    )
    return (
        f'<svg class="curves" width="{width}" height="{height}" role="img" aria-label="perturbation curves">{axes}'
        f'<polygon fill="#f4c7a1" fill-opacity="0.5" points="{area}"/>'
        f"{line(lerf, '#1f77b4')}{line(morf, '#d62728')}</svg>"
    )


def _row(cells: Sequence[str]) -> str:
    """One table row of already escaped cells: a text cell, then numbers."""
    first, *numbers = cells
    return f"<tr><td>{first}</td>" + "".join(f"<td class='num'>{c}</td>" for c in numbers) + "</tr>"


def render(ev: Any) -> str:
    """The section of an ``Evaluation``: summary, mean curves, per-item scores."""
    summary = ev.summary()
    loc = any(s.n_localised for s in summary)
    head = ["method", "items", "ABPC (logit)", "95 % CI", "ABPC (prob.)", "AUC MoRF", "AUC LeRF"]
    head += ["insertion AUC (prob.)", "deletion AUC (prob.)", "comprehensiveness", "sufficiency", "s / explanation"]
    if loc:
        head += ["top-1 hit (pointing game)", "top-5 hit", "evidence mass"]
    rows = []
    for s in summary:
        cells = [
            esc(s.method),
            str(s.n),
            f"<b>{_fixed(s.abpc)}</b>",
            f"± {_fixed(s.abpc_ci)}",
            _fixed(s.abpc_prob),
            _fixed(s.morf_auc),
            _fixed(s.lerf_auc),
            _fixed(s.insertion_auc),
            _fixed(s.deletion_auc),
            _fixed(s.comprehensiveness),
            _fixed(s.sufficiency),
            _fixed(s.seconds, 2),
        ]
        if loc:
            cells += [_fixed(s.top1, 2), _fixed(s.top5, 2), _fixed(s.mass, 2)]
        rows.append(_row(cells))
    curves = {m: ev.mean_curves(m) for m in ev.methods}
    values = [v for c in curves.values() if c for k in ("morf", "lerf") for v in c[k]]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    plots = "".join(
        f'<div class="plot"><h3>{esc(m)}</h3>{_plot(c["fractions"], c["morf"], c["lerf"], lo, hi)}</div>'
        for m, c in curves.items()
        if c is not None
    )
    item_rows = "".join(
        "<tr>"
        f"<td>{esc(r.item_id)}</td><td>{esc(r.method)}</td><td>{'yes' if r.answered else 'no'}</td>"
        f"<td class='num'>{r.n_tokens}</td><td class='num'>{_fixed(r.curves.abpc)}</td>"
        f"<td class='num'>{_fixed(r.seconds, 2)}</td>"
        f"<td class='num'>{_fixed(r.localisation['mass'], 2) if r.localisation else '–'}</td></tr>"
        for r in ev.results
    )
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    return (
        "<section id='evaluation'>"
        "<p>Tokens are removed in order of relevance, most relevant first (MoRF, red) and least relevant first "
        "(LeRF, blue), and the explained logit is followed. ABPC is the area between the two curves "
        "(larger = more faithful; a random order scores about 0). On the explained token's probability: the "
        "insertion AUC (tokens restored most relevant first; higher = more faithful), the deletion AUC (removed "
        "most relevant first; lower = more faithful), and ERASER comprehensiveness / sufficiency, the probability "
        "drop without / with only the top 1, 5, 10, 20 and 50 % of the tokens, averaged (higher / lower = more "
        "faithful).</p>"
        f"<table class='list'><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<h2>Mean curves (explained logit vs share of tokens removed)</h2>"
        f'<div class="plots">{plots}</div>'
        "<details><summary>Per item</summary>"
        "<table class='list'><thead><tr><th>item</th><th>method</th><th>answered</th><th>tokens</th><th>ABPC</th>"
        f"<th>s</th><th>evidence mass</th></tr></thead><tbody>{item_rows}</tbody></table></details></section>"
    )


__all__ = ["CSS", "render"]
