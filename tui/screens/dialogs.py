"""Small modal dialogs: a file path with a choice of action (export, open)."""

from __future__ import annotations

from collections.abc import Sequence

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from ..widgets.text_input import TextInput


class PathDialog(ModalScreen[tuple[str, str] | None]):
    """Ask for a path; dismissed with ``(choice, path)`` or None when cancelled.

    ``choices``: (id, button label) pairs; Enter picks the choice that matches the
    path's extension, else the first one.
    """

    BINDINGS = [Binding("escape", "dismiss_none", "Close", id="dialog.close")]

    def __init__(self, title: str, path: str, choices: Sequence[tuple[str, str]], hint: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.initial = path
        self.choices = list(choices)
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            yield TextInput(self.initial, id="dialog-path")
            if self.hint:
                yield Label(self.hint, id="dialog-hint")
            with Horizontal(id="dialog-buttons"):
                for choice, label in self.choices:
                    yield Button(label, id=f"choice-{choice}", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog-path", Input).focus()

    @on(Input.Submitted, "#dialog-path")
    def _submitted(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
        ids = [c for c, _ in self.choices]
        self._finish(suffix if suffix in ids else ids[0])

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        elif event.button.id and event.button.id.startswith("choice-"):
            self._finish(event.button.id.removeprefix("choice-"))

    def _finish(self, choice: str) -> None:
        path = self.query_one("#dialog-path", Input).value.strip()
        if not path:
            self.query_one("#dialog-path", Input).border_subtitle = "type a path"
            return
        self.dismiss((choice, path))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
