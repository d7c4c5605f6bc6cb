"""Terminal view of an encoder-decoder explanation: source and decoder tokens side by side.

Same colour scale as :mod:`tui.render` (red supports the token, blue speaks against it),
normalised per answer token over both sides together.
"""

from __future__ import annotations

import numpy as np
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .render import _parse_which, compact, legend, relevance_rgb, show_token


def _row(tokens, values, scale: float, *, mark: str | None = None) -> Text:
    text = Text()
    for tok, v in zip(tokens, values):
        r, g, b = relevance_rgb(float(v), scale)
        text.append(show_token(tok), style=f"black on rgb({r},{g},{b})")
        text.append(" ")
    if mark is not None:
        text.append(show_token(mark), style="bold underline")
    return text


def render_seq2seq(console: Console, attribution, *, heatmaps: str = "all", top: int = 5) -> None:
    a = attribution
    src = a.source_tokens or []
    which = _parse_which(heatmaps, [t.token for t in a.targets])
    console.print(
        Text.assemble(
            ("model ", "dim"), a.model, ("  method ", "dim"), a.method, ("  ", ""), (f"{a.seconds:.2f} s", "dim")
        )
    )
    console.print(Text.assemble(("source: ", "bold"), " ".join(src)))
    console.print(Text.assemble(("answer: ", "bold"), (a.answer, "bold green")))
    table = Table(show_edge=False, header_style="bold")
    for col, kw in (
        ("#", {"justify": "right"}),
        ("token", {}),
        ("logit", {"justify": "right"}),
        ("p", {"justify": "right"}),
        ("Σ rel / logit", {"justify": "right"}),
        ("source share", {"justify": "right"}),
        (f"top {top} source tokens", {}),
    ):
        table.add_column(col, **kw)
    for i, t in enumerate(a.targets):
        s = np.asarray(t.source_relevance, dtype=np.float64)
        total = float(np.abs(s).sum() + np.abs(t.relevance.astype(np.float64)).sum())
        share = float(np.abs(s).sum()) / total if total else float("nan")
        best = np.argsort(-s, kind="stable")[:top]
        sources = ", ".join(f"{compact(src[j])}@{j}" for j in best)
        table.add_row(
            str(i),
            compact(t.token),
            f"{t.logit:.2f}",
            f"{t.probability:.2f}",
            f"{t.conservation:.3f}",
            f"{share:.2f}",
            sources,
        )
    console.print(table)
    if which:
        console.print(legend())
    for i in which:
        t = a.targets[i]
        scale = max(float(np.abs(t.source_relevance).max(initial=0.0)), float(np.abs(t.relevance).max(initial=0.0)))
        console.print(
            Group(
                Text.assemble(
                    ("\n▶ ", "bold"), (f"[{i}] {compact(t.token)}", "bold green"), (f"  logit {t.logit:.2f}", "dim")
                ),
                Text.assemble(("  source  ", "dim"), _row(src, t.source_relevance, scale)),
                Text.assemble(
                    ("  decoder ", "dim"), _row(a.tokens[: t.position], t.relevance, scale, mark=a.tokens[t.position])
                ),
            )
        )
