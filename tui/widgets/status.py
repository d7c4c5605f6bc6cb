"""The status line: what the app is doing, a progress bar while a job runs, the last error."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar

from .literal import literal


class StatusBar(Horizontal):
    """Bound to the app's ``progress`` and ``status`` reactives (one per screen, all in sync)."""

    DEFAULT_CSS = """
    StatusBar { height: 1; }
    StatusBar > #status-text { width: 1fr; height: 1; }
    StatusBar > ProgressBar { width: auto; height: 1; display: none; }
    StatusBar.-busy > ProgressBar { display: block; }
    StatusBar.-error > #status-text { color: $text-error; }
    """

    def compose(self) -> ComposeResult:
        yield Label("", id="status-text")
        yield ProgressBar(id="progress", show_eta=False)

    def on_mount(self) -> None:
        self.watch(self.app, "status", self._show_status)
        self.watch(self.app, "progress", self._show_progress)

    def _show_status(self, status: tuple[str, str]) -> None:
        text, kind = status
        self.query_one("#status-text", Label).update(literal(text))  # paths, model names, errors: data
        self.set_class(kind == "error", "-error")

    def _show_progress(self, progress: tuple[str, int, int | None] | None) -> None:
        bar = self.query_one(ProgressBar)
        self.set_class(progress is not None, "-busy")
        if progress is None:
            return
        label, done, total = progress
        bar.update(total=total, progress=done)
        bar.tooltip = literal(label)  # e.g. "loading MODEL"
