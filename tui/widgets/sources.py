"""Ranked list of the most relevant input tokens (or words) of the selected answer token."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from lrp_llm.text import compact

from .tokenflow import NEGATIVE, POSITIVE


@dataclass(frozen=True)
class Source:
    """One ranked input: ``index`` into the displayed tokens, its text, value and distance."""

    index: int
    text: str
    value: float
    distance: int | None = None


def ranked_sources(
    texts: Sequence[str],
    values: Sequence[float],
    *,
    distances: Sequence[int] | None = None,
    k: int = 10,
    k_negative: int = 3,
    apart: Collection[int] = (),
) -> tuple[list[Source], list[Source]]:
    """The ``k`` largest positive values and the ``k_negative`` most negative ones, leaving out the
    indices in ``apart`` (special and template tokens: :func:`apart_sources` ranks those)."""
    order = sorted((i for i in range(len(values)) if i not in apart), key=lambda i: (-values[i], i))

    def source(i: int) -> Source:
        return Source(i, texts[i], float(values[i]), None if distances is None else int(distances[i]))

    top = [source(i) for i in order[:k] if values[i] > 0]
    bottom = [source(i) for i in reversed(order[-k_negative:]) if values[i] < 0]
    return top, bottom


def apart_sources(texts: Sequence[str], values: Sequence[float], apart: Collection[int], *, k: int = 3) -> list[Source]:
    """The ``k`` special / template tokens of largest |value| (listed apart from the other sources)."""
    order = sorted((i for i in apart if i < len(values) and values[i] != 0), key=lambda i: (-abs(values[i]), i))
    return [Source(i, texts[i], float(values[i])) for i in order[:k]]


class SourcesList(OptionList):
    """Enter or click on a source scrolls the input to it (``SourcesList.Jump``)."""

    BINDINGS = [
        Binding("enter", "select", "Jump to source", id="sources.jump", show=False),
    ]

    @dataclass
    class Jump(Message):
        """Show input token ``index`` (an index into the displayed tokens)."""

        sources: SourcesList
        index: int

        @property
        def control(self) -> SourcesList:
            return self.sources

    def show(
        self,
        top: Sequence[Source],
        bottom: Sequence[Source] = (),
        *,
        total: float | None = None,
        apart: Sequence[Source] = (),
    ) -> None:
        """Fill the list; ``total``: the positive relevance sum that shares are relative to; ``apart``: the
        special and template tokens, listed last under their own heading."""
        self.clear_options()
        scale = max([abs(s.value) for s in [*top, *bottom, *apart]], default=0.0)
        options: list[Option | None] = [self._option(s, scale, total) for s in top]
        if bottom:
            if options:
                options.append(None)
            options.extend(self._option(s, scale, total) for s in bottom)
        if apart:
            if options:
                options.append(None)
            options.append(Option(Text("special / template tokens", style="dim italic"), disabled=True))
            options.extend(self._option(s, scale, total) for s in apart)
        self.add_options(options)

    def _option(self, source: Source, scale: float, total: float | None) -> Option:
        color = POSITIVE if source.value >= 0 else NEGATIVE
        bar_len = int(round(5 * abs(source.value) / scale)) if scale else 0
        text = Text()
        shown = 0.0 if abs(source.value) < 5e-4 else source.value  # never "-0.000"
        text.append(f"{shown:+7.3f} ", style=Style(color=color.rich_color, bold=True))
        text.append("█" * bar_len + " " * (5 - bar_len), style=Style(color=color.rich_color))
        text.append(" ")
        text.append(compact(source.text))
        details = []
        if total and abs(100 * source.value / total) >= 0.5:
            details.append(f"{100 * source.value / total:.0f}%")
        if source.distance is not None:
            details.append(f"d{source.distance}")
        if details:
            text.append("  " + " ".join(details), style="dim")
        return Option(text, id=str(source.index))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Jump(self, int(event.option.id)))
