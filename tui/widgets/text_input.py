"""An ``Input`` that shows control characters in its value visibly instead of sending them to
the terminal (a pasted ``ESC ] 0 ; … BEL`` would retitle the window, U+009B start a CSI)."""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Input

from lrp_llm.text import visible_chars


class TextInput(Input):
    """An ``Input`` for text from the user: the value is kept as typed (it is what the model gets),
    only its display is made safe: each unsafe code point becomes a one-cell stand-in
    (:func:`lrp_llm.text.visible_chars`), shown reversed. One character for one, so the cursor
    and the selection, which ``Input`` places by index into the value, stay where they are."""

    @property
    def _value(self) -> Text:
        # Input builds Text(value), which silently drops BEL, BS, VT, FF and CR (and so shifts
        # the cursor) and passes ESC and C1 to the terminal; this is the same with them shown.
        if self.password:
            return super()._value
        shown = visible_chars(self.value)
        text = Text(shown, no_wrap=True, overflow="ignore", end="")
        for i, (typed, drawn) in enumerate(zip(self.value, shown, strict=True)):
            if typed != drawn:
                text.stylize("reverse", i, i + 1)
        return self.highlighter(text) if self.highlighter is not None else text

    def _position_to_cell(self, position: int) -> int:
        # Input measures the raw value, where ESC is zero cells wide; the terminal cursor must sit
        # where the shown text (one cell per control, tab included) puts it
        return cell_len(visible_chars(self.value[:position]))
