"""Components section: which layers, heads and neurons carried one answer token.

Rendered from a :class:`ComponentsView` (what the app's Components view and ``xai-tui
components`` show): the layer x position relevance trace as a grid (the report's colour
scale), a per-layer table (block output, attention / MLP / mixer outputs), the top heads,
neurons and Mamba channels with their signed relevance, and, when chosen, one component's
conditional heatmap over the input and the effect of ablating it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrp_llm.export.common import esc, fmt
from lrp_llm.export.comparison_section import coloured_input
from lrp_llm.export.grid_svg import grid_svg
from lrp_llm.results.attribution import Attribution

TOP = 10  # components listed per kind
# the kinds listed (ComponentRelevance.top_components) and their headings
KINDS = (
    ("head", "Attention heads"),
    ("neuron", "MLP neurons"),
    ("channel", "Mamba channels"),
    ("ssm-head", "SSM heads"),
    ("expert", "Experts"),
)
CSS = ".cmpn-lists{display:flex;flex-wrap:wrap;gap:1.5em}.cmpn-lists table{min-width:16em}"


@dataclass
class ComponentsView:
    """One answer token's components as shown: ``attribution`` (explained with components), answer token
    ``target``, the chosen component ``selected`` (a site name) with its conditional heatmap
    ``conditional`` (per input token) and ``ablation`` (``tui.backend.ModelBackend.ablate``'s dict)."""

    attribution: Attribution
    target: int
    selected: str | None = None
    conditional: np.ndarray | None = None
    ablation: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if not 0 <= self.target < len(self.attribution.targets):
            raise ValueError(f"answer token {self.target} is not explained")
        if self.attribution.targets[self.target].components is None:
            raise ValueError("the explanation has no component relevance (explain with components=True)")

    def to_dict(self) -> dict[str, Any]:
        """JSON data: the whole explanation (reopenable, ``xai-tui open``) and what was chosen."""
        from lrp_llm.results.base import json_ready

        return {
            "kind": "components",
            "target": self.target,
            "selected": self.selected,
            "conditional": None if self.conditional is None else json_ready(np.asarray(self.conditional).tolist()),
            "ablation": json_ready(self.ablation),
            "attribution": self.attribution.to_dict(),
        }

    @property
    def explained(self):
        return self.attribution.targets[self.target]

    @property
    def components(self):
        return self.explained.components


def layer_labels(n_layers: int) -> list[str]:
    """The trace's row names: the embedding output, then each block's output."""
    return ["embedding", *(f"layer {i}" for i in range(n_layers))]


def layer_rows(c) -> list[tuple[str, float, float | None, float | None, float | None]]:
    """Per trace row: (name, total over positions, attention, MLP, mixer output relevance)."""
    totals = c.layer_totals
    rows = [("embedding", float(totals[0]), None, None, None)]
    for i in range(c.n_layers):
        rows.append((f"layer {i}", float(totals[i + 1]), c.attn[i], c.mlp[i], c.mixer[i]))
    return rows


def _ranked_table(title: str, items) -> str:
    body = "".join(f"<tr><td>{esc(site)}</td><td class='num'>{esc(fmt(value))}</td></tr>" for site, value in items)
    return (
        f"<div><h3>{esc(title)}</h3><table class='list'><thead><tr><th>component</th><th>relevance</th></tr>"
        f"</thead><tbody>{body}</tbody></table></div>"
    )


def render(view: ComponentsView, *, top: int = TOP) -> str:
    a, t, c = view.attribution, view.explained, view.components
    tokens = [str(x) for x in a.tokens[: t.position]]
    svg, scale = grid_svg(
        c.trace,
        layer_labels(c.n_layers),
        tokens,
        lambda r, col, v: f"{layer_labels(c.n_layers)[r]} · {tokens[col]!r} (position {col}): {fmt(v)}",
        label="relevance trace: layer x position",
    )
    layers = "".join(
        f"<tr><td>{esc(name)}</td>{''.join(f'<td class=num>{esc(fmt(v))}</td>' for v in values)}</tr>"
        for name, *values in layer_rows(c)
    )
    lists = [
        _ranked_table(heading, c.top_components(kind, top)) for kind, heading in KINDS if c.top_components(kind, 1)
    ]
    parts = [
        "<section id='components'>",
        f"<h2>Components of {esc(repr(t.token))} (answer token {view.target}, position {t.position})</h2>",
        f"<p>Explained logit {esc(fmt(t.logit))}, probability {esc(fmt(t.probability, 3))}; relevance of each "
        "model part for this token under the method's rules (gradient x input form).</p>",
        "<h3>Relevance trace: residual stream per layer and position</h3>",
        f"{svg}<p class='note'>scale: max |relevance| = {esc(fmt(scale))}</p>",
        "<table class='list'><thead><tr><th>layer</th><th>block output</th><th>attention</th><th>MLP</th>"
        f"<th>mixer</th></tr></thead><tbody>{layers}</tbody></table>",
        f"<div class='cmpn-lists'>{''.join(lists)}</div>",
    ]
    if view.selected is not None and view.conditional is not None:
        parts += [
            f"<h3>Conditional heatmap of {esc(view.selected)}</h3>",
            f"<p>The input relevance that flows through {esc(view.selected)} "
            f"(\u03a3 {esc(fmt(float(np.sum(view.conditional))))}).</p>",
            coloured_input(list(a.tokens), view.conditional, t.position),
        ]
    if view.ablation is not None:
        ab = view.ablation
        parts.append(
            f"<h3>Ablating {esc(ab['site'])} ({esc(ab['op'])})</h3><table class='list'><thead><tr><th></th>"
            f"<th>logit of {esc(repr(ab['token']))}</th><th>probability</th></tr></thead><tbody>"
            f"<tr><td>as is</td><td class='num'>{esc(fmt(ab['logit']))}</td>"
            f"<td class='num'>{esc(fmt(ab['probability'], 4))}</td></tr>"
            f"<tr><td>ablated</td><td class='num'>{esc(fmt(ab['new_logit']))}</td>"
            f"<td class='num'>{esc(fmt(ab['new_probability'], 4))}</td></tr></tbody></table>"
            f"<p>New top token: {esc(repr(ab['new_top']))} (p {esc(fmt(ab['new_top_probability'], 4))}).</p>"
        )
    parts.append("</section>")
    return "".join(parts)


__all__ = ["CSS", "KINDS", "ComponentsView", "layer_labels", "layer_rows", "render"]
