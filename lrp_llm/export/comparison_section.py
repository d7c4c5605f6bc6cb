"""Method comparison section: one answer token explained by two or three methods, the input
coloured once per method (each on its own scale), the rank agreement of every pair and, when
measured, each method's MoRF / LeRF curves and ABPC (plots as in ``evaluation_section``).
Rendered from a :class:`~lrp_llm.results.comparison.MethodComparison`."""

from __future__ import annotations

import math

import numpy as np

from lrp_llm.export.common import esc, fmt, level_class
from lrp_llm.export.evaluation_section import _fixed, _plot
from lrp_llm.export.levels import colour_level
from lrp_llm.export.token_section import shown
from lrp_llm.methods import label
from lrp_llm.results.comparison import MethodComparison

CSS = ".cmp-methods{display:flex;flex-wrap:wrap;gap:1em}.cmp-method{flex:1 1 20em;border:1px solid #eee;padding:.3em}"


def coloured_input(tokens: list[str], relevance: np.ndarray, position: int) -> str:
    """The tokens before ``position`` coloured by ``relevance`` (scaled to its largest |value|),
    then the explained token marked."""
    values = np.asarray(relevance, dtype=np.float64)
    scale = float(np.abs(values).max()) if len(values) else 0.0
    spans = [
        f'<span class="{level_class(colour_level(float(v), scale))}" title="{esc(fmt(float(v)))}">'
        f"{esc(shown(tokens[i]))}</span>"
        for i, v in enumerate(values)
    ]
    spans.append(f'<span class="x tg" title="explained token">{esc(shown(tokens[position]))}</span>')
    return f'<div class="toks">{"".join(spans)}</div><p class="note">scale: max |relevance| = {esc(fmt(scale))}</p>'


def render(c: MethodComparison) -> str:
    pair_rows = "".join(
        f"<tr><td>{esc(label(p.a))} \u2194 {esc(label(p.b))}</td><td class='num'>{_fixed(p.spearman)}</td>"
        f"<td class='num'>{round(p.overlap * p.k)}/{p.k}</td></tr>"
        for p in c.pairs
    )
    methods = []
    for m, r in zip(c.methods, c.relevance):
        abpc = c.abpc(m)
        methods.append(
            f"<div class='cmp-method'><h3>{esc(label(m))}</h3>"
            f"<p>\u03a3 relevance {esc(fmt(float(r.sum())))}"
            f"{f', ABPC {_fixed(abpc)}' if abpc is not None else ''}</p>"
            f"{coloured_input(c.tokens, r, c.position)}</div>"
        )
    faith = ""
    if c.curves:
        values = [float(v) for cv in c.curves.values() for v in (*cv.morf_logit, *cv.lerf_logit) if math.isfinite(v)]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        plots = "".join(
            f'<div class="plot"><h3>{esc(label(m))}: ABPC {_fixed(cv.abpc)}</h3>'
            f"{_plot(cv.fractions, cv.morf_logit, cv.lerf_logit, lo, hi)}</div>"
            for m, cv in c.curves.items()
        )
        faith = (
            "<h2>Faithfulness of this explanation</h2>"
            f"<p>Tokens are removed ({esc(c.strategy)}, {c.steps} steps) in order of each method's relevance, "
            "most relevant first (MoRF, red) and least relevant first (LeRF, blue); the explained logit is "
            "followed. ABPC is the area between the curves (larger = more faithful).</p>"
            f'<div class="plots">{plots}</div>'
        )
    return (
        "<section id='comparison'>"
        f"<h2>Agreement between methods (top-{c.k} overlap)</h2>"
        "<table class='list'><thead><tr><th>pair</th><th>Spearman \u03c1</th>"
        f"<th>top-{c.k} overlap</th></tr></thead><tbody>{pair_rows}</tbody></table>"
        f"<h2>Input relevance per method</h2><div class='cmp-methods'>{''.join(methods)}</div>{faith}</section>"
    )


__all__ = ["CSS", "coloured_input", "render"]
