"""``xai-tui explain --components``: per answer token, the layers, heads and neurons that carried it.

Tokens are data: they go into ``Text`` cells (never markup), with control characters visible."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lrp_llm.text import compact


def _ranked(items, digits: int = 2) -> Text:
    """``site +1.23`` entries, one per line (site names are ours; values signed)."""
    text = Text()
    for j, (site, value) in enumerate(items):
        if j:
            text.append("\n")
        text.append(site, style="bold" if j == 0 else "")
        text.append(f" {value:+.{digits}f}", style="green" if value > 0 else "red")
    return text


def render_components(console: Console, attribution, *, top: int = 3) -> None:
    """A table: per answer token its top ``top`` parts (attention / MLP / mixer outputs by |relevance|),
    heads and neurons across layers (and experts, for mixture-of-experts models)."""
    table = Table(show_edge=False, header_style="bold", title="components (relevance for each answer token)")
    experts = any(t.components is not None and t.components.experts is not None for t in attribution.targets)
    for col in ("#", "token", "parts", "heads", "neurons", *(("experts",) if experts else ())):
        table.add_column(col, justify="right" if col == "#" else "left")
    for i, target in enumerate(attribution.targets):
        c = target.components
        if c is None:
            continue
        table.add_row(
            Text(str(i)),
            Text(compact(target.token)),
            _ranked(c.top_components("part", top)),
            _ranked(c.top_components("head", top)),
            _ranked(c.top_components("neuron", top)),
            *((_ranked(c.top_components("expert", top)),) if experts else ()),
        )
    console.print(table)


def render_component_view(console: Console, view, *, top: int = 5) -> None:
    """``xai-tui components``: one answer token's relevance trace summed per layer (with the position that
    carries most), its top heads / neurons / channels and, when a component is selected, its conditional
    heatmap over the input (the same numbers as the Components view and its HTML section)."""
    from lrp_llm.export.components_section import KINDS, layer_rows

    from .render import heatmap

    a, t, c = view.attribution, view.explained, view.components
    title = Text("components of ", style="bold")
    title.append(compact(t.token))
    title.append(f"  (answer token {view.target}, position {t.position}, logit {t.logit:.3f}, p {t.probability:.3f})")
    console.print(title)
    table = Table(show_edge=False, header_style="bold", title="relevance trace per layer")
    for col in ("layer", "block output", "attention", "MLP", "mixer", "top position"):
        table.add_column(col, justify="left" if col in ("layer", "top position") else "right")
    for r, (name, total, *parts) in enumerate(layer_rows(c)):
        row = c.trace[r]
        k = int(abs(row).argmax()) if len(row) else 0
        peak = Text(f"{k} ")
        peak.append(compact(a.tokens[k]) if len(row) else "")
        peak.append(f" {float(row[k]):+.3f}" if len(row) else "")
        table.add_row(name, f"{total:+.4f}", *("—" if v is None else f"{v:+.4f}" for v in parts), peak)
    console.print(table)
    shown = [(heading, c.top_components(kind, top)) for kind, heading in KINDS if c.top_components(kind, 1)]
    # side by side while they fit (a site name and its value take about 32 cells; names are never cut)
    per = max(1, min(3, console.width // 33))
    for j in range(0, len(shown), per):
        group = shown[j : j + per]
        ranked = Table(show_edge=False, header_style="bold", title=f"top {top} components" if j == 0 else None)
        for heading, _ in group:
            ranked.add_column(heading, no_wrap=True)
        ranked.add_row(*(_ranked(items, 4) for _, items in group))
        console.print(ranked)
    if view.selected is not None and view.conditional is not None:
        line = Text("conditional heatmap of ", style="bold")
        line.append(view.selected)
        line.append(f"  (Σ {float(view.conditional.sum()):+.4f})")
        console.print(line)
        console.print(heatmap(a.tokens[: t.position + 1], view.conditional, mark=t.position))


__all__ = ["render_component_view", "render_components"]
