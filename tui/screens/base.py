"""What every view screen has: header, view tabs, status line, footer, palette commands."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Tab, Tabs

from ..views import available_views

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
