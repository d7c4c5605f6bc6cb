"""An ``Input`` that shows control characters in its value visibly instead of sending them to
the terminal (a pasted ``ESC ] 0 ; … BEL`` would retitle the window, U+009B start a CSI)."""

from __future__ import annotations

from rich.cells import cell_len
from rich.highlighter import Highlighter
from rich.text import Text
from textual.widgets import Input

from lrp_llm.text import visible_chars


class VisibleControls(Highlighter):
    """Replaces each unsafe code point with a one-cell stand-in (:func:`lrp_llm.text.visible_chars`),
    shown reversed; one character for one, so the cursor and the selection stay where they are."""

    def highlight(self, text: Text) -> None:
        plain = text.plain
        shown = visible_chars(plain)
        if shown == plain:
            return
        text.plain = shown
        for i, (a, b) in enumerate(zip(plain, shown, strict=True)):
            if a != b:
                text.stylize("reverse", i, i + 1)


class TextInput(Input):
    """An ``Input`` for text from the user: the value is kept as typed (it is what the model gets),
    only its display is made safe."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("highlighter", VisibleControls())
        super().__init__(*args, **kwargs)

    def _position_to_cell(self, position: int) -> int:
        # Input measures the raw value, where ESC is zero cells wide; the cursor must sit where
        # the shown text (one cell per control, tab included) puts it
        return cell_len(visible_chars(self.value[:position]))
