"""Similarity (BiLRP): which token pairs make two texts similar to an embedding model.

Two texts in; out come the cosine, the conservation ratio, the interaction matrix as a
grid of coloured cells (rows: tokens of A, columns: tokens of B) and the top pairs.
Moving the grid's cursor (arrows, click) or clicking a token of either sentence colours
the other sentence by that token's interactions: its partners light up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Select, Static

from lrp_llm.methods import label, method_names
from lrp_llm.text import compact

from ..exporting import Export, similarity_export
from ..widgets.heatgrid import HeatGrid
from ..widgets.legend import Legend
from ..widgets.literal import literal, styled
from ..widgets.sources import Source, SourcesList
from ..widgets.text_input import TextInput
from ..widgets.tokenflow import TokenFlow
from .base import Command, ViewScreen

SIMILARITY_METHODS = method_names("encoder")


def display_tokens(tokens: Sequence[str]) -> list[str]:
    """WordPiece / SentencePiece tokens as they read: ``##ing`` -> ``ing``, ``word`` -> `` word``."""
    out = []
    for i, t in enumerate(tokens):
        if t.startswith("##"):
            out.append(t[2:])
        elif t.startswith(("▁", "Ġ")):
            out.append(" " + t[1:])
        else:
            out.append(t if i == 0 or t.startswith(" ") else " " + t)
    return out


class SimilarityScreen(ViewScreen):
    VIEW_ID = "similarity"

    BINDINGS = [
        Binding("ctrl+t", "next_method", "Method", id="similarity.method"),
        Binding("j", "jump(1)", "Next pair", id="similarity.jump"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._pairs: list[tuple[int, int, float]] = []
        self._jump = -1

    def compose_body(self) -> ComposeResult:
        with Vertical(id="sim-box"):
            yield TextInput(placeholder="Sentence A", id="sim-a", compact=True)
            with Horizontal(id="sim-row"):
                yield TextInput(placeholder="Sentence B (Enter compares)", id="sim-b", compact=True)
                yield Select(
                    [(label(m), m) for m in SIMILARITY_METHODS],
                    value="bilrp",
                    allow_blank=False,
                    compact=True,
                    id="sim-method",
                )
                yield Button("Compare", id="compare", variant="primary", compact=True)
        yield Static("", id="sim-summary")
        with Horizontal(id="sim-body"):
            with Vertical(id="sim-left"):
                yield TokenFlow(id="sim-tokens-a", placeholder="Type two sentences above and press Enter.")
                yield TokenFlow(id="sim-tokens-b")
                yield HeatGrid(id="sim-grid")
            yield SourcesList(id="sim-pairs")
        yield Legend(id="sim-legend")

    def on_mount(self) -> None:
        self.query_one("#sim-box").border_title = "Compare two texts"
        self.query_one("#sim-tokens-a").border_title = "A"
        self.query_one("#sim-tokens-b").border_title = "B"
        self.query_one("#sim-grid").border_title = "Interactions (rows: A, columns: B)"
        self.query_one("#sim-pairs").border_title = "Top pairs"
        self.query_one(Legend).unit = "max |interaction| shown"
        self.watch(self.xai, "similarity", self._show_result)

    @on(Input.Submitted, "#sim-a, #sim-b")
    @on(Button.Pressed, "#compare")
    def _compare(self) -> None:
        a = self.query_one("#sim-a", Input).value
        b = self.query_one("#sim-b", Input).value
        method = self.query_one("#sim-method", Select).value
        self.xai.compare(a, b, method if isinstance(method, str) else "bilrp")

    def _show_result(self, e) -> None:
        if e is None:
            return
        a, b = display_tokens(e.tokens_a), display_tokens(e.tokens_b)
        self.query_one("#sim-summary", Static).update(
            styled(
                f" cosine [b]{e.similarity:.3f}[/]   dot {e.dot:.3f}   Σ interactions / score {e.conservation:.2f}   "
                "[dim]$method · $model[/]",
                method=label(e.method),
                model=e.model,
            )
        )
        grid = self.query_one("#sim-grid", HeatGrid)
        grid.set_matrix(e.interactions, a, b, cursor=None)
        self._pairs = e.top_pairs(12)
        negative = e.top_pairs(3, sign=-1)
        pairs = self.query_one("#sim-pairs", SourcesList)
        sources = [Source(k, f"{compact(a[i])} ↔ {compact(b[j])}", v) for k, (i, j, v) in enumerate(self._pairs)]
        against = [
            Source(len(self._pairs) + k, f"{compact(a[i])} ↔ {compact(b[j])}", v)
            for k, (i, j, v) in enumerate(negative)
            if v < 0
        ]
        pairs.show(sources, against)
        self._all_pairs = self._pairs + [p for p in negative if p[2] < 0]
        self._jump = -1
        first = self._pairs[0] if self._pairs else (0, 0, 0.0)
        grid.cursor = (first[0], first[1])
        self.query_one(Legend).scale = grid.scale
        if self.app.focused is None or isinstance(self.app.focused, Input):
            grid.focus()

    @on(HeatGrid.CellSelected, "#sim-grid")
    def _cell(self, event: HeatGrid.CellSelected) -> None:
        self._select(event.row, event.column)

    def _select(self, i: int, j: int) -> None:
        """Colour B by the interactions of A's token ``i`` and A by those of B's token ``j``."""
        e = self.xai.similarity
        if e is None:
            return
        m = e.interactions
        scale = float(np.abs(m).max()) if m.size else 0.0
        a, b = display_tokens(e.tokens_a), display_tokens(e.tokens_b)
        flow_a = self.query_one("#sim-tokens-a", TokenFlow)
        flow_b = self.query_one("#sim-tokens-b", TokenFlow)
        flow_a.set_tokens(a, m[:, j], scale=scale, target=i)
        flow_b.set_tokens(b, m[i, :], scale=scale, target=j)
        flow_a.border_title = literal(f"A · coloured by its interactions with {compact(b[j])}")
        flow_b.border_title = literal(f"B · coloured by its interactions with {compact(a[i])}")
        grid = self.query_one("#sim-grid", HeatGrid)
        grid.border_subtitle = literal(f"{compact(a[i])} × {compact(b[j])} = {m[i, j]:+.4f}")
        self.query_one(Legend).scale = scale

    @on(TokenFlow.Clicked, "#sim-tokens-a")
    def _clicked_a(self, event: TokenFlow.Clicked) -> None:
        grid = self.query_one("#sim-grid", HeatGrid)
        if grid.cursor is not None:
            grid.cursor = (event.index, grid.cursor[1])

    @on(TokenFlow.Clicked, "#sim-tokens-b")
    def _clicked_b(self, event: TokenFlow.Clicked) -> None:
        grid = self.query_one("#sim-grid", HeatGrid)
        if grid.cursor is not None:
            grid.cursor = (grid.cursor[0], event.index)

    @on(SourcesList.Jump, "#sim-pairs")
    def _pair_chosen(self, event: SourcesList.Jump) -> None:
        i, j, _ = self._all_pairs[event.index]
        self.query_one("#sim-grid", HeatGrid).cursor = (i, j)

    def action_jump(self, step: int) -> None:
        if not self._pairs:
            return
        self._jump = (self._jump + step) % len(self._pairs)
        i, j, _ = self._pairs[self._jump]
        self.query_one("#sim-grid", HeatGrid).cursor = (i, j)
        self.query_one("#sim-pairs", SourcesList).highlighted = self._jump

    def action_next_method(self) -> None:
        select = self.query_one("#sim-method", Select)
        methods = list(SIMILARITY_METHODS)
        current = select.value if select.value in methods else methods[0]
        select.value = methods[(methods.index(current) + 1) % len(methods)]
        if self.xai.similarity is not None:
            self._compare()

    def commands(self) -> Iterable[Command]:
        yield ("Compare", "Explain the similarity of sentence A and B", self._compare)
        for m in SIMILARITY_METHODS:
            yield (
                f"Similarity method: {label(m)}",
                f"Explain with {label(m)} (recomputes)",
                lambda m=m: self._use_method(m),
            )
        if self._pairs:
            yield ("Jump to top pair", "Move the grid cursor to the strongest pair (j)", lambda: self.action_jump(1))

    def _use_method(self, method: str) -> None:
        self.query_one("#sim-method", Select).value = method
        self._compare()

    def export_target(self) -> Export | None:
        e = self.xai.similarity
        return similarity_export(e) if e is not None else None
