"""What every view screen has: header, view tabs, status line, footer, palette commands."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Tab, Tabs

from ..views import available_views
from ..widgets.sources import SourcesList
from ..widgets.tokenflow import AnswerTokens

if TYPE_CHECKING:
    from ..app import XaiApp
    from ..exporting import Export

Command = tuple[str, str, object]  # (title, help, callback) for the command palette


class ViewTabs(Tabs):
    """The views as tabs (F2 … F5 or a click switch between them)."""

    def __init__(self, active: str, kind: str | None = None) -> None:
        tabs = [Tab(f"{v.title} [dim]{v.key.upper()}[/]", id=v.id) for v in available_views(kind)]
        super().__init__(*tabs, active=active, id="view-tabs")
        self.can_focus = False


class ViewScreen(Screen):
    """Base of the views; subclasses yield their body from ``compose_body``."""

    VIEW_ID: ClassVar[str] = ""

    @property
    def xai(self) -> XaiApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        from ..widgets.status import StatusBar

        yield Header(icon="◆")
        yield ViewTabs(self.VIEW_ID, self.xai.model_kind)
        yield from self.compose_body()
        yield StatusBar()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    @on(Tabs.TabActivated, "#view-tabs")
    def _switch_view(self, event: Tabs.TabActivated) -> None:
        event.stop()
        if event.tab.id and event.tab.id != self.VIEW_ID:
            self.xai.action_switch_view(event.tab.id)

    def on_screen_resume(self) -> None:
        self.query_one(ViewTabs).active = self.VIEW_ID

    def commands(self) -> Iterable[Command]:
        """Command palette entries for this view."""
        return ()

    def export_target(self) -> Export | None:
        """The result this view would export (None: nothing to export yet)."""
        return None


class AnswerViewScreen(ViewScreen):
    """A view of one explained answer: the answer's cursor selects the token (``app.target``), the ranked
    sources of that token can be walked with ``j`` / ``k`` (or chosen in the list), Ctrl+T switches the
    method. Subclasses fill ``_ranked`` (the ranked units, best first) and say in :meth:`show_source`
    where a unit is drawn."""

    def __init__(self) -> None:
        super().__init__()
        self._ranked: list[int] = []  # the units of the ranked sources, best first
        self._jump = -1  # position in ``_ranked`` that `j` last jumped to

    def show_source(self, unit: int) -> None:
        """Scroll to ranked unit ``unit`` and mark it."""
        raise NotImplementedError

    @on(AnswerTokens.CursorMoved, "#answer")
    def _cursor_moved(self, event: AnswerTokens.CursorMoved) -> None:
        self.xai.target = event.index

    @on(SourcesList.Jump, "#sources")
    def _jump_to_source(self, event: SourcesList.Jump) -> None:
        self.show_source(event.index)

    def action_jump(self, step: int) -> None:
        """Walk through the selected token's top sources, scrolling to each."""
        if not self._ranked:
            return
        self._jump = (self._jump + step) % len(self._ranked)
        unit = self._ranked[self._jump]
        self.show_source(unit)
        sources = self.query_one("#sources", SourcesList)
        sources.highlighted = sources.get_option_index(str(unit))

    def action_next_method(self) -> None:
        methods = self.xai.available_methods
        i = methods.index(self.xai.method) if self.xai.method in methods else -1
        self.xai.set_method(methods[(i + 1) % len(methods)])

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "jump":
            return bool(self._ranked)
        if action == "next_method":
            return self.xai.backend is not None
        return True

    def method_commands(self) -> Iterable[Command]:
        """Palette entries that explain the same answer with each other method the model offers."""
        from lrp_llm.methods import label

        app = self.xai
        if app.backend is None:
            return
        for m in app.available_methods:
            if m != app.method:
                yield (f"Method: {label(m)}", f"Explain with {label(m)} (recomputes)", lambda m=m: app.set_method(m))

    def export_target(self) -> Export | None:
        from ..exporting import attribution_export

        a = self.xai.attribution
        return attribution_export(a) if a is not None else None
