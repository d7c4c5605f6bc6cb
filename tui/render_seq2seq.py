"""Terminal view of an encoder-decoder explanation: source and decoder tokens side by side.

Same colour scale as :mod:`tui.render` (red supports the token, blue speaks against it),
normalised per answer token over both sides together.
"""

from __future__ import annotations

import numpy as np
from rich.console import Console, Group
from rich.text import Text

from lrp_llm.text import visible

from .render import (
    _parse_which,
    compact,
    heatmap,
    legend,
    run_header,
    target_cells,
    target_heading,
    targets_table,
)


def render_seq2seq(console: Console, attribution, *, heatmaps: str = "all", top: int = 5) -> None:
    a = attribution
    src = a.source_tokens or []
    which = _parse_which(heatmaps, [t.token for t in a.targets])
    console.print(run_header(a))
    console.print(Text.assemble(("source: ", "bold"), " ".join(visible(s) for s in src)))
    console.print(Text.assemble(("answer: ", "bold"), (visible(a.answer, keep="\n\t"), "bold green")))
    table = targets_table(["source share", f"top {top} source tokens"])
    for i, t in enumerate(a.targets):
        s = np.asarray(t.source_relevance, dtype=np.float64)
        share = t.side_shares()[0]
        best = np.argsort(-s, kind="stable")[:top]
        sources = ", ".join(f"{compact(src[j])}@{j}" for j in best)
        table.add_row(*target_cells(i, t), f"{share:.2f}", sources)
    console.print(table)
    if which:
        console.print(legend())
    for i in which:
        t = a.targets[i]
        # one scale for both sides, so source and decoder colours compare
        scale = max(float(np.abs(t.source_relevance).max(initial=0.0)), float(np.abs(t.relevance).max(initial=0.0)))
        decoder = a.tokens[: t.position + 1]
        console.print(
            Group(
                target_heading(i, t),
                Text.assemble(("  source  ", "dim"), heatmap(src, t.source_relevance, scale=scale, sep=" ")),
                Text.assemble(
                    ("  decoder ", "dim"), heatmap(decoder, t.relevance, mark=t.position, scale=scale, sep=" ")
                ),
            )
        )
