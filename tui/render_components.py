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


__all__ = ["render_components"]
