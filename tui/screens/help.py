"""The help screen: every key binding of the app and its views, with what it does."""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static


def own_bindings(cls: type) -> list[Binding]:
    """The bindings a class declares itself (not those it inherits)."""
    return [b for b in cls.__dict__.get("BINDINGS", []) if isinstance(b, Binding)]


_KEY_NAMES = {
    "question_mark": "?",
    "escape": "Esc",
    "left": "←",
    "right": "→",
    "plus": "+",
    "minus": "-",
    "equals_sign": "=",
    "enter": "Enter",
    "home": "Home",
    "end": "End",
    "tab": "Tab",
}


def key_label(key: str) -> str:
    """``"f1,question_mark"`` -> ``"F1 / ?"``."""
    out = []
    for k in key.split(","):
        k = _KEY_NAMES.get(k, k)
        if k[:1] == "f" and k[1:].isdigit():
            k = k.upper()
        if k.startswith("ctrl+") and len(k) == 6:
            k = k[:-1] + k[-1].upper()
        out.append(k.replace("ctrl+", "Ctrl+").replace("shift+", "Shift+"))
    return " / ".join(out)


class HelpScreen(ModalScreen[None]):
    """A table: where a key works, the key, what it does, the binding id (for keymaps)."""

    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close", id="help.close")]

    def __init__(self, sections: Iterable[tuple[str, type]], intro: str = "", kind: str | None = None) -> None:
        super().__init__()
        self.sections = list(sections)
        self.intro = intro
        self.kind = kind  # the loaded model's kind: the keys of views for other kinds are not listed

    @staticmethod
    def hidden(binding: Binding, kind: str | None = None) -> bool:
        """Keys of views that are not available in this installation, or not for a model of ``kind``, are not listed."""
        from ..views import available_views

        if binding.id and binding.id.startswith("view."):
            return binding.id.removeprefix("view.") not in {v.id for v in available_views(kind)}
        return False

    def rows(self) -> list[tuple[str, str, str, str]]:
        out = []
        for where, cls in self.sections:
            for b in own_bindings(cls):
                if self.hidden(b, self.kind):
                    continue
                out.append((where, key_label(b.key), b.description, b.id or ""))
        return out

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Label("Keys  [dim](Esc closes; Ctrl+P opens the command palette)[/]", id="help-title")
            if self.intro:
                yield Static(self.intro, id="help-intro")
            table = DataTable(id="help-table", cursor_type="row", zebra_stripes=True)
            table.add_columns("where", "key", "does", "id")
            table.add_rows(self.rows())
            yield table
