"""Rich renderings of a :class:`~lrp_llm.results.similarity.SimilarityExplanation`: top pairs and a compact matrix.

Colours as in :mod:`tui.render`: red = the pair adds to the similarity, blue = it takes
away, normalised by the largest |interaction| shown.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lrp_llm.text import visible

from .render import compact, relevance_rgb

# Above this many columns the matrix shows coloured blocks instead of numbers.
NUMERIC_COLUMNS = 14
MAX_TOKEN_WIDTH = 10


def _short(token: str, width: int = MAX_TOKEN_WIDTH) -> str:
    text = compact(token)
    return text if len(text) <= width else text[: width - 1] + "…"


def summary_line(e) -> Text:
    return Text.assemble(
        ("cosine ", "dim"),
        (f"{e.similarity:.4f}", "bold"),
        ("  dot ", "dim"),
        f"{e.dot:.4f}",
        ("  Σ interactions ", "dim"),
        f"{e.interaction_sum:.4f}",
        ("  (", "dim"),
        (f"{e.conservation:.3f}", "bold" if abs(e.conservation - 1) < 0.05 else ""),
        (f" of the {e.mode})", "dim"),
        ("  ", ""),
        (f"{e.seconds:.2f} s", "dim"),
    )


def header_line(e) -> Text:
    rules = f" ({e.rules})" if e.rules else ""
    return Text.assemble(
        ("model ", "dim"),
        visible(e.model),
        ("  method ", "dim"),
        visible(f"{e.method}{rules}"),
        ("  pooling ", "dim"),
        visible(e.pooling),
    )


def top_pairs_table(e, k: int = 8) -> Table:
    table = Table(show_edge=False, header_style="bold", title=f"top {k} interacting pairs", title_justify="left")
    for col, kw in (
        ("#", {"justify": "right"}),
        ("token of a", {}),
        ("token of b", {}),
        ("interaction", {"justify": "right"}),
        ("share", {"justify": "right"}),
    ):
        table.add_column(col, **kw)
    total = e.interaction_sum
    scale = float(abs(e.interactions).max()) if e.interactions.size else 0.0
    for rank, (i, j, v) in enumerate(e.top_pairs(k)):
        r, g, b = relevance_rgb(v, scale)
        share = f"{v / total:+.0%}" if total else ""
        table.add_row(
            str(rank + 1),
            f"{compact(e.tokens_a[i])}@{i}",
            f"{compact(e.tokens_b[j])}@{j}",
            Text(f"{v:+.4f}", style=f"black on rgb({r},{g},{b})"),
            share,
        )
    return table


def matrix_table(e, *, skip_special: bool = False) -> Table:
    """Rows = tokens of a, columns = tokens of b; numbers when narrow enough, else coloured blocks."""
    rows = [i for i in range(len(e.tokens_a)) if not (skip_special and e.special_a[i])]
    cols = [j for j in range(len(e.tokens_b)) if not (skip_special and e.special_b[j])]
    numeric = len(cols) <= NUMERIC_COLUMNS
    scale = max((abs(float(e.interactions[i, j])) for i in rows for j in cols), default=0.0)
    table = Table(
        show_edge=False, show_lines=False, pad_edge=False, padding=(0, 1 if numeric else 0), header_style="dim"
    )
    table.add_column("a \\ b", justify="right", no_wrap=True)
    for j in cols:
        label = _short(e.tokens_b[j], 6) if numeric else str(j % 10)
        table.add_column(label, justify="right", no_wrap=True)
    for i in rows:
        cells: list[Text | str] = [f"{_short(e.tokens_a[i])} {i}"]
        for j in cols:
            v = float(e.interactions[i, j])
            r, g, b = relevance_rgb(v, scale)
            style = f"black on rgb({r},{g},{b})"
            cells.append(Text(f"{v:+.2f}" if numeric else "  ", style=style))
        table.add_row(*cells)
    if not numeric:
        table.caption = "columns: " + "  ".join(f"{j}={_short(e.tokens_b[j], 8)}" for j in cols)
    return table


def render_similarity(console: Console, e, *, top: int = 8, matrix: bool = True) -> None:
    console.print(header_line(e))
    console.print(Text.assemble(("a: ", "bold"), visible(e.text_a, keep="\n\t")))
    console.print(Text.assemble(("b: ", "bold"), visible(e.text_b, keep="\n\t")))
    console.print(summary_line(e))
    if top > 0:
        console.print(top_pairs_table(e, top))
    if matrix:
        console.print(matrix_table(e))


def ranking_table(results: Sequence, texts: Sequence[str]) -> Table:
    table = Table(show_edge=False, header_style="bold", title="ranking by cosine similarity", title_justify="left")
    for col, kw in (
        ("rank", {"justify": "right"}),
        ("line", {"justify": "right"}),
        ("cosine", {"justify": "right"}),
        ("top pair", {}),
        ("text", {"overflow": "ellipsis", "no_wrap": True, "max_width": 60}),
    ):
        table.add_column(col, **kw)
    for e in results:
        pairs = e.top_pairs(1)
        pair = f"{compact(e.tokens_a[pairs[0][0]])} ~ {compact(e.tokens_b[pairs[0][1]])}" if pairs else ""
        k = int(e.meta.get("index", 0))
        line = int(e.meta.get("line", k + 1))
        table.add_row(str(e.meta.get("rank", "")), str(line), f"{e.similarity:.4f}", pair, visible(texts[k]))
    return table
