"""One self-contained HTML file for an :class:`~lrp_llm.analyses.evaluate.Evaluation`: the summary
table, the mean MoRF / LeRF curves of each method as inline SVG, and the per-item
scores. No script, no external resource."""

from __future__ import annotations

import html
import math

from lrp_llm.analyses.evaluate import Evaluation

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}.muted{color:#777}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plot{border:1px solid #eee;padding:.3em}
.plot h3{font-size:.95em;margin:.2em .4em}svg text{font-size:10px;fill:#555}
"""


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def _plot(fractions, morf, lerf, lo: float, hi: float, width: int = 300, height: int = 180) -> str:
    pad = 28
    span = hi - lo if hi > lo else 1.0

    def pt(x: float, y: float) -> str:
        px = pad + x * (width - pad - 8)
        py = height - pad - (y - lo) / span * (height - pad - 8)
        return f"{px:.1f},{py:.1f}"

    def line(ys, colour: str) -> str:
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
        f'<svg width="{width}" height="{height}" role="img" aria-label="perturbation curves">{axes}'
        f'<polygon fill="#f4c7a1" fill-opacity="0.5" points="{area}"/>'
        f"{line(lerf, '#1f77b4')}{line(morf, '#d62728')}</svg>"
    )


def evaluation_html(ev: Evaluation, title: str | None = None) -> str:
    title = title or f"Faithfulness of explanations: {ev.model}"
    summary = ev.summary()
    loc = any(s.n_localised for s in summary)
    head = ["method", "items", "ABPC (logit)", "95 % CI", "ABPC (prob.)", "AUC MoRF", "AUC LeRF", "s / explanation"]
    if loc:
        head += ["top-1 hit", "evidence mass"]
    rows = []
    for s in summary:
        cells = [
            html.escape(s.method),
            str(s.n),
            f"<b>{_fmt(s.abpc)}</b>",
            f"± {_fmt(s.abpc_ci)}",
            _fmt(s.abpc_prob),
            _fmt(s.morf_auc),
            _fmt(s.lerf_auc),
            _fmt(s.seconds, 2),
        ]
        if loc:
            cells += [_fmt(s.top1, 2), _fmt(s.mass, 2)]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    curves = {m: ev.mean_curves(m) for m in ev.methods}
    values = [v for c in curves.values() if c for k in ("morf", "lerf") for v in c[k]]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    plots = "".join(
        f'<div class="plot"><h3>{html.escape(m)}</h3>{_plot(c["fractions"], c["morf"], c["lerf"], lo, hi)}</div>'
        for m, c in curves.items()
        if c is not None
    )
    item_rows = "".join(
        f"<tr><td>{html.escape(r.item_id)}</td><td>{html.escape(r.method)}</td><td>{'yes' if r.answered else 'no'}</td>"
        f"<td>{r.n_tokens}</td><td>{_fmt(r.curves.abpc)}</td><td>{_fmt(r.seconds, 2)}</td>"
        f"<td>{_fmt(r.localisation['mass'], 2) if r.localisation else '–'}</td></tr>"
        for r in ev.results
    )
    meta = (
        f"{ev.n_items} items, {ev.n_answered} answered by the model; removal: {html.escape(ev.strategy)}, "
        f"{ev.steps} steps; {html.escape(str(ev.meta.get('date', '')))}"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="muted">{meta}</p>
<p>Tokens are removed in order of relevance, most relevant first (MoRF, red) and least relevant first
(LeRF, blue), and the explained logit is followed. ABPC is the area between the two curves
(larger = more faithful; a random order scores about 0).</p>
<table><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead><tbody>{"".join(rows)}</tbody></table>
<h2>Mean curves (explained logit vs share of tokens removed)</h2>
<div class="plots">{plots}</div>
<details><summary>Per item</summary>
<table><thead><tr><th>item</th><th>method</th><th>answered</th><th>tokens</th><th>ABPC</th><th>s</th>
<th>evidence mass</th></tr></thead><tbody>{item_rows}</tbody></table></details>
</body></html>
"""


__all__ = ["evaluation_html"]
