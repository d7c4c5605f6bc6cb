"""The colour scale: what red and blue mean and which |relevance| is full strength."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from .tokenflow import relevance_color


class Legend(Widget):
    """``−1 ▮▮▮ 0 ▮▮▮ +1 × scale``: the symmetric scale of the token colours."""

    DEFAULT_CSS = """
    Legend { height: 1; }
    """

    scale: reactive[float] = reactive(0.0)
    """The |relevance| drawn at full strength (the largest |value| of the row shown)."""

    unit: reactive[str] = reactive("max |relevance| of the selected token")

    def render(self) -> Text:
        background = self.background_colors[1]
        text = Text("against ", style="dim")
        for k in range(-5, 6):
            bg = relevance_color(k / 5, 1.0, background)
            text.append(
                " −1 " if k == -5 else " +1 " if k == 5 else "  ",
                style=Style(bgcolor=bg.rich_color, color=bg.get_contrast_text(1.0).rich_color),
            )
        text.append(" supports", style="dim")
        if self.scale > 0:
            text.append(f"   ±1 = {self.scale:.3g} ({self.unit})", style="dim")
        return text
