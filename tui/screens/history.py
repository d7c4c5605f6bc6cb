"""History: every explanation of the session, to go back to without recomputing.

One row per entry (time, method, the question, the answer); Enter or a click shows the
entry again in the Ask view. A method switch of an answer is an entry of its own. The
session (all entries) is saved with Ctrl+Shift+S or the palette's "Save session" and
reopened, without the model, with ``xai-tui open SESSION.json``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from lrp_llm.methods import label
from lrp_llm.text import visible

from ..exporting import Export, attribution_export
from ..widgets.literal import literal
from .base import Command, ViewScreen

if TYPE_CHECKING:
    from lrp_llm.results.session import SessionEntry

EMPTY = "No explanations yet: every question you ask (and every method switch) is listed here."
QUESTION_CHARS = 42
ANSWER_CHARS = 26


def clipped(text: str, limit: int) -> str:
    """``text`` on one line, controls visible, at most ``limit`` characters (… when cut)."""
    shown = " ".join(visible(text.replace("\n", " ").replace("\t", " ")).split())
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def clock(time: str) -> str:
    """``HH:MM:SS`` of an entry's ISO time."""
    return datetime.fromisoformat(time).strftime("%H:%M:%S")


def entry_row(entry: SessionEntry, shown: bool) -> Text:
    """One history row; data only as plain text (never markup), ``shown``: on screen now."""
    row = Text()
    row.append("▶ " if shown else "  ", style="bold")
    row.append(clock(entry.time), style="dim")
    row.append(f"  {label(entry.method):<12.12} ", style="bold")
    row.append(f"{clipped(entry.question, QUESTION_CHARS):<{QUESTION_CHARS}}")
    row.append("  → ", style="dim")
    row.append(clipped(entry.attribution.answer, ANSWER_CHARS), style="italic")
    return row


class HistoryScreen(ViewScreen):
    VIEW_ID = "history"
    CSS_PATH: ClassVar = [Path(__file__).parent.parent / "history.tcss"]

    def compose_body(self) -> ComposeResult:
        yield OptionList(id="history-list")
        yield Static(literal(EMPTY), id="history-detail")

    def on_mount(self) -> None:
        self.query_one("#history-list").border_title = "History"
        self.query_one("#history-detail").border_title = "Entry"
        self.watch(self.xai, "history", self._show_history)
        self.watch(self.xai, "attribution", self._show_history, init=False)

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.query_one("#history-list").focus()

    def _show_history(self) -> None:
        entries = self.xai.history
        options = self.query_one("#history-list", OptionList)
        highlighted = options.highlighted
        shown = self.xai.attribution
        options.clear_options()
        options.add_options([Option(entry_row(e, e.attribution is shown), id=str(i)) for i, e in enumerate(entries)])
        if entries:
            current = next((i for i, e in enumerate(entries) if e.attribution is shown), len(entries) - 1)
            options.highlighted = highlighted if highlighted is not None and highlighted < len(entries) else current
        self._show_detail()

    @on(OptionList.OptionHighlighted, "#history-list")
    def _show_detail(self) -> None:
        entry = self._highlighted()
        detail = self.query_one("#history-detail", Static)
        if entry is None:
            detail.update(literal(EMPTY))
            return
        a = entry.attribution
        text = Text()
        text.append("Question ", style="bold")
        text.append(clipped(entry.question, 200))
        if entry.context:
            text.append("\nContext  ", style="bold")
            text.append(clipped(entry.context, 200))
        text.append("\nAnswer   ", style="bold")
        text.append(clipped(a.answer, 200))
        text.append("\n")
        text.append(
            f"{label(a.method)} · {len(a.targets)} answer tokens explained · {visible(a.model)} · {entry.time}",
            style="dim",
        )
        detail.update(text)

    @on(OptionList.OptionSelected, "#history-list")
    def _choose(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.xai.show_entry(int(event.option.id or 0))

    def _highlighted(self) -> SessionEntry | None:
        index = self.query_one("#history-list", OptionList).highlighted
        entries = self.xai.history
        return entries[index] if index is not None and index < len(entries) else None

    def commands(self) -> Iterable[Command]:
        yield ("Show entry", "Show the highlighted entry in the Ask view", self._show_highlighted)

    def _show_highlighted(self) -> None:
        index = self.query_one("#history-list", OptionList).highlighted
        if index is not None:
            self.xai.show_entry(index)

    def export_target(self) -> Export | None:
        entry = self._highlighted()
        return None if entry is None else attribution_export(entry.attribution)
