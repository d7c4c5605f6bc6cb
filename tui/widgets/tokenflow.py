"""Tokens as flowing, wrapped text with a relevance colour per token.

``TokenFlow`` lays tokens out itself (wrapping at token boundaries, a newline token
ends a line), so it knows where every token is: a click maps to a token, and
``scroll_to_token`` brings one into view. It is a Line-API widget (``render_line``), so
a prompt of thousands of tokens costs only the visible lines per frame.
``AnswerTokens`` adds a cursor moved with the arrow keys or the mouse.

Colours: red = positive relevance (the token supports the explained one), blue =
negative; the strength is |value| / ``scale`` in ten steps (the HTML report's levels,
:mod:`lrp_llm.export.levels`), blended over the widget's background so it reads on dark
and light themes alike.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.color import Color
from textual.geometry import Offset, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from lrp_llm.export.levels import LEVELS, colour_level
from lrp_llm.text import visible

POSITIVE = Color(214, 39, 40)
NEGATIVE = Color(31, 119, 220)


def relevance_level(value: float, scale: float) -> float:
    """Signed strength in [-1, 1] in tenths: the report's colour level (:func:`colour_level`) / LEVELS."""
    return colour_level(value, scale) / LEVELS


def relevance_color(value: float, scale: float, background: Color) -> Color:
    """Background colour of a token: ``background`` blended toward red or blue."""
    level = relevance_level(value, scale)
    if level == 0:
        return background
    return background.blend(POSITIVE if level > 0 else NEGATIVE, abs(level))


def display_pieces(token: str) -> list[tuple[str, bool]]:
    """How a token is drawn: (text, line break after) pieces; whitespace made visible, a newline
    ends the line (CR before it dropped), every other control visible (:func:`lrp_llm.text.visible`)."""
    if token == "":
        return [("▯", False)]
    parts = visible(token.replace("\r", "").replace("\t", "→"), keep="\n").split("\n")
    out = [(part + "↵", True) for part in parts[:-1]]
    if parts[-1]:
        out.append((parts[-1], False))
    return out


@dataclass(frozen=True)
class Piece:
    """A drawn part of token ``index`` at cells [x, x + width) of its line."""

    index: int
    text: str
    x: int
    width: int


class TokenFlow(ScrollView, can_focus=True):
    """Tokens with relevance colours; scrolls vertically, wraps to its width."""

    DEFAULT_CSS = """
    TokenFlow {
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-gutter: stable;
    }
    """

    @dataclass
    class Clicked(Message):
        """A token was clicked."""

        flow: TokenFlow
        index: int

        @property
        def control(self) -> TokenFlow:
            return self.flow

    highlight: reactive[int | None] = reactive(None)
    """A token to show inverted (the source that was jumped to), or None."""

    def __init__(self, *, placeholder: str = "", id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.placeholder = placeholder
        self.tokens: list[str] = []
        self.values: list[float] | None = None
        self.scale = 0.0
        self.gap = 0  # blank cells between tokens: for vocabularies whose tokens carry no spaces (word-level)
        self.target: int | None = None
        self.dim_from: int | None = None
        self._lines: list[list[Piece]] = []
        self._token_line: dict[int, int] = {}
        self._layout_width = -1
        self._style_cache: dict[int, Style] = {}

    # ------------------------------------------------------------------ content
    def set_tokens(
        self,
        tokens: Sequence[str],
        values: Sequence[float] | None = None,
        *,
        target: int | None = None,
        dim_from: int | None = None,
        scale: float | None = None,
    ) -> None:
        """Show ``tokens``; ``values[i]`` colours token i (missing/None: no colour).

        ``target``: the explained token, drawn underlined; ``dim_from``: tokens from this
        index on are dimmed (they come after the target). ``scale``: the |value| drawn at
        full strength (default: the largest |value|).
        """
        self.tokens = list(tokens)
        self.values = None if values is None else [float(v) for v in values]
        if scale is None:
            finite = [abs(v) for v in self.values or [] if math.isfinite(v)]
            scale = max(finite, default=0.0)
        self.scale = float(scale)
        self.target, self.dim_from = target, dim_from
        self.highlight = None
        self._style_cache.clear()
        self._relayout(force=True)
        self.refresh()

    def clear(self) -> None:
        self.set_tokens([])

    def value(self, index: int) -> float | None:
        if self.values is None or index >= len(self.values):
            return None
        return self.values[index]

    # ------------------------------------------------------------------- layout
    def _relayout(self, force: bool = False) -> None:
        width = self.scrollable_content_region.width
        if width <= 0 or (width == self._layout_width and not force):
            return
        self._layout_width = width
        lines: list[list[Piece]] = [[]]
        first_line: dict[int, int] = {}
        x = 0
        for i, token in enumerate(self.tokens):
            for text, newline in display_pieces(token):
                while text:
                    w = cell_len(text)
                    if x > 0 and x + w > width:
                        lines.append([])
                        x = 0
                    if w > width:  # longer than a line: cut it
                        head, cells = "", 0
                        for ch in text:
                            if cells + cell_len(ch) > width:
                                break
                            head += ch
                            cells += cell_len(ch)
                        head = head or text[0]
                        text = text[len(head) :]
                    else:
                        head, text = text, ""
                    first_line.setdefault(i, len(lines) - 1)
                    lines[-1].append(Piece(i, head, x, cell_len(head)))
                    x += cell_len(head)
                if newline:
                    lines.append([])
                    x = 0
            if self.gap and x > 0:
                x += self.gap
        if lines and not lines[-1] and len(lines) > 1:
            lines.pop()
        self._lines = lines if self.tokens else []
        self._token_line = first_line
        self.virtual_size = Size(width, len(self._lines))

    def on_resize(self, event: events.Resize) -> None:
        self._relayout()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._style_cache.clear()

    def line_of(self, index: int) -> int | None:
        """The line where token ``index`` starts."""
        return self._token_line.get(index)

    def token_at(self, offset: Offset) -> int | None:
        """The token under a content offset (scroll position taken into account)."""
        y = offset.y + self.scroll_offset.y
        if not 0 <= y < len(self._lines):
            return None
        for piece in self._lines[y]:
            if piece.x <= offset.x < piece.x + piece.width:
                return piece.index
        return None

    def scroll_to_token(self, index: int, *, center: bool = True) -> None:
        """Scroll so token ``index`` is visible (centred when it was out of view)."""
        self._relayout()
        line = self._token_line.get(index)
        if line is None:
            return
        top, height = self.scroll_offset.y, self.scrollable_content_region.height
        if top <= line < top + height:
            return
        y = line - height // 2 if center else line
        self.scroll_to(y=max(0, y), animate=False)

    # ---------------------------------------------------------------- rendering
    def _token_style(self, index: int, base: Style) -> Style:
        style = self._style_cache.get(index)
        if style is not None:
            return style
        style = base
        value = self.value(index)
        if value is not None:
            background = self.background_colors[1]
            bg = relevance_color(value, self.scale, background)
            if bg != background:
                style += Style(bgcolor=bg.rich_color, color=bg.get_contrast_text(1.0).rich_color)
        if index == self.target:
            style += Style(bold=True, underline=True)
        elif self.dim_from is not None and index >= self.dim_from:
            style += Style(dim=True)
        style += self._extra_style(index)
        self._style_cache[index] = style
        return style

    def _extra_style(self, index: int) -> Style:
        if index == self.highlight:
            return Style(reverse=True, bold=True)
        return Style()

    def watch_highlight(self, old: int | None, new: int | None) -> None:
        self._style_cache.clear()
        self.refresh()

    def render_line(self, y: int) -> Strip:
        self._relayout()
        width = self.scrollable_content_region.width
        base = self.rich_style
        n = y + self.scroll_offset.y
        if not self._lines:
            lines = textwrap.wrap(self.placeholder, max(1, width)) if self.placeholder else []
            if y < len(lines):
                return Strip([Segment(lines[y], base + Style(dim=True, italic=True))]).extend_cell_length(width, base)
            return Strip.blank(width, base)
        if n >= len(self._lines):
            return Strip.blank(width, base)
        segments: list[Segment] = []
        end = 0
        for p in self._lines[n]:
            if p.x > end:  # the gap between tokens
                segments.append(Segment(" " * (p.x - end), base))
            segments.append(Segment(p.text, self._token_style(p.index, base)))
            end = p.x + p.width
        return Strip(segments).extend_cell_length(width, base).crop(0, width)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        index = self.token_at(offset)
        if index is not None:
            self.post_message(self.Clicked(self, index))


class AnswerTokens(TokenFlow):
    """The answer: a cursor on one token, moved by ←/→ (Home/End) or the mouse."""

    BINDINGS = [
        Binding("left", "move(-1)", "Previous token", id="answer.previous", show=False),
        Binding("right", "move(1)", "Next token", id="answer.next", show=False),
        Binding("home", "move_to(0)", "First token", id="answer.first", show=False),
        Binding("end", "move_to(-1)", "Last token", id="answer.last", show=False),
    ]

    @dataclass
    class CursorMoved(Message):
        """The cursor moved to answer token ``index`` (keys, click or hover)."""

        flow: AnswerTokens
        index: int

        @property
        def control(self) -> AnswerTokens:
            return self.flow

    cursor: reactive[int | None] = reactive(None)
    """Index of the selected answer token, None while there is nothing to select."""

    follow_mouse = True
    """Hovering a token selects it (as the arrow keys do)."""

    selectable: int | None = None
    """How many tokens from the first can be selected (those explained so far); None: all."""

    def _extra_style(self, index: int) -> Style:
        if index == self.cursor:
            return Style(reverse=True, bold=True)
        if self.selectable is not None and index >= self.selectable:
            return Style(dim=True, italic=True)  # not explained yet
        return super()._extra_style(index)

    def _last(self) -> int:
        n = len(self.tokens) if self.selectable is None else min(self.selectable, len(self.tokens))
        return max(0, n - 1)

    def set_answer(self, tokens: Sequence[str], cursor: int | None, selectable: int | None = None) -> None:
        """Show ``tokens`` with the cursor on ``cursor``; only the first ``selectable`` can be selected."""
        self.selectable = selectable
        self.set_tokens(tokens)
        self.set_reactive(AnswerTokens.cursor, cursor)
        self._style_cache.clear()
        if cursor is not None:
            self.scroll_to_token(cursor, center=False)
        self.refresh()

    def watch_cursor(self, old: int | None, new: int | None) -> None:
        self._style_cache.clear()
        if new is not None:
            self.scroll_to_token(new, center=False)
            self.post_message(self.CursorMoved(self, new))
        self.refresh()

    def action_move(self, step: int) -> None:
        if self.tokens and self.cursor is not None:
            self.cursor = max(0, min(self._last(), self.cursor + step))

    def action_move_to(self, index: int) -> None:
        if self.tokens and self.cursor is not None:
            self.cursor = index % (self._last() + 1)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("move", "move_to"):
            return self.cursor is not None
        return True

    def on_click(self, event: events.Click) -> None:
        self._select_at(event)

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self.follow_mouse:
            self._select_at(event)

    def _select_at(self, event: events.MouseEvent) -> None:
        offset = event.get_content_offset(self)
        if offset is None or self.cursor is None:
            return
        index = self.token_at(offset)
        if index is not None and index != self.cursor and index <= self._last():
            self.cursor = index
