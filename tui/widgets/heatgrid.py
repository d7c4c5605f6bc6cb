"""A matrix as coloured cells with a cursor: token-pair interactions, layer x position grids.

Row labels stay put while the cells scroll sideways; the first line is a column ruler
(every fifth column numbered) and stays put while the rows scroll. The cursor cell
moves with the arrow keys or a click and posts :class:`HeatGrid.CellSelected`; the
full labels and the value of the cursor cell belong in a caption the owner shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Offset, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from lrp_llm.text import visible

from .tokenflow import relevance_color

CELL = 3  # cells per column


def _fit(label: str, width: int) -> str:
    """``label`` on one line (controls visible), cut with ``…`` or padded to ``width`` cells."""
    label = visible(label.replace("\n", "↵").replace("\t", "→"))
    if cell_len(label) <= width:
        return label + " " * (width - cell_len(label))
    out = ""
    for ch in label:
        if cell_len(out + ch) > width - 1:
            break
        out += ch
    return out + "…" + " " * (width - 1 - cell_len(out))


class HeatGrid(ScrollView, can_focus=True):
    """``values`` (rows, columns) drawn on a symmetric red/blue scale; NaN cells are blank."""

    DEFAULT_CSS = """
    HeatGrid {
        scrollbar-gutter: stable;
    }
    """

    BINDINGS = [
        Binding("up", "move(-1, 0)", "Cell up", id="grid.up", show=False),
        Binding("down", "move(1, 0)", "Cell down", id="grid.down", show=False),
        Binding("left", "move(0, -1)", "Cell left", id="grid.left", show=False),
        Binding("right", "move(0, 1)", "Cell right", id="grid.right", show=False),
    ]

    @dataclass
    class CellSelected(Message):
        """The cursor moved to (``row``, ``column``)."""

        grid: HeatGrid
        row: int
        column: int

        @property
        def control(self) -> HeatGrid:
            return self.grid

    cursor: reactive[tuple[int, int] | None] = reactive(None)
    """(row, column) of the selected cell, None while the grid is empty."""

    def __init__(self, *, label_width: int = 12, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.values = np.zeros((0, 0), dtype=np.float64)
        self.row_labels: list[str] = []
        self.column_labels: list[str] = []
        self.scale = 0.0
        self.label_width = label_width
        self.marked_rows: set[int] = set()
        self.marked_columns: set[int] = set()

    def set_matrix(
        self,
        values: np.ndarray,
        row_labels: Sequence[str],
        column_labels: Sequence[str],
        *,
        scale: float | None = None,
        cursor: tuple[int, int] | None = (0, 0),
    ) -> None:
        self.values = np.asarray(values, dtype=np.float64)
        self.row_labels, self.column_labels = list(row_labels), list(column_labels)
        finite = np.abs(self.values[np.isfinite(self.values)])
        self.scale = float(scale if scale is not None else (finite.max() if finite.size else 0.0))
        rows, cols = self.values.shape
        longest = max((cell_len(x) for x in self.row_labels), default=1)
        self._label = min(self.label_width, max(4, longest)) + 1
        self.virtual_size = Size(self._label + cols * CELL, rows + 1)
        self.set_reactive(HeatGrid.cursor, cursor if rows and cols else None)
        self.refresh()

    @property
    def _label_cells(self) -> int:
        return getattr(self, "_label", self.label_width + 1)

    # ---------------------------------------------------------------- drawing
    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        rows, cols = self.values.shape
        sx, sy = self.scroll_offset
        label_w = self._label_cells
        cells_w = max(0, width - label_w)
        if y == 0:
            ruler = "".join(f"{c:<{CELL}}" if c % 5 == 0 else " " * CELL for c in range(cols))
            head = Strip([Segment(" " * label_w, base)])
            cells = Strip([Segment(ruler, base + Style(dim=True))]).crop(sx, sx + cells_w)
            return Strip.join([head, cells]).extend_cell_length(width, base).crop(0, width)
        r = y - 1 + sy
        if r >= rows:
            return Strip.blank(width, base)
        label_style = (
            base + Style(bold=True) if (self.cursor and self.cursor[0] == r) or r in self.marked_rows else base
        )
        head = Strip([Segment(_fit(self.row_labels[r], label_w - 1) + " ", label_style)])
        background = self.background_colors[1]
        segs = []
        for c in range(cols):
            v = float(self.values[r, c])
            selected = self.cursor == (r, c)
            if not math.isfinite(v):
                segs.append(Segment(" · "[:CELL], base + Style(dim=True)))
                continue
            bg = relevance_color(v, self.scale, background)
            style = base + Style(bgcolor=bg.rich_color, color=bg.get_contrast_text(1.0).rich_color)
            text = " " * CELL
            if selected:
                text, style = "[" + " " * (CELL - 2) + "]", style + Style(bold=True)
            elif c in self.marked_columns and r in self.marked_rows:
                text = " • "[:CELL]
            segs.append(Segment(text, style))
        cells = Strip(segs).crop(sx, sx + cells_w)
        return Strip.join([head, cells]).extend_cell_length(width, base).crop(0, width)

    # ----------------------------------------------------------------- cursor
    def watch_cursor(self, cursor: tuple[int, int] | None) -> None:
        if cursor is None:
            return
        r, c = cursor
        # keep the cell in view (the labels and the ruler do not scroll)
        sx, sy = self.scroll_offset
        cells_w = max(CELL, self.scrollable_content_region.width - self._label_cells)
        rows_h = max(1, self.scrollable_content_region.height - 1)
        x = min(sx, c * CELL) if c * CELL < sx else max(sx, (c + 1) * CELL - cells_w)
        y = min(sy, r) if r < sy else max(sy, r - rows_h + 1)
        if (x, y) != (sx, sy):
            self.scroll_to(x=x, y=y, animate=False, force=True)
        self.post_message(self.CellSelected(self, r, c))
        self.refresh()

    def action_move(self, dr: int, dc: int) -> None:
        if self.cursor is None:
            return
        rows, cols = self.values.shape
        r, c = self.cursor
        self.cursor = (max(0, min(rows - 1, r + dr)), max(0, min(cols - 1, c + dc)))

    def cell_at(self, offset: Offset) -> tuple[int, int] | None:
        rows, cols = self.values.shape
        r = offset.y - 1 + self.scroll_offset.y
        x = offset.x - self._label_cells
        if offset.y < 1 or x < 0 or not 0 <= r < rows:
            return None
        c = (x + self.scroll_offset.x) // CELL
        return (r, c) if 0 <= c < cols else None

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        cell = self.cell_at(offset) if offset is not None else None
        if cell is not None:
            self.cursor = cell
