"""Horizontal bar chart of relevance by distance (log2 bins)."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from .tokenflow import NEGATIVE, POSITIVE

_EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(fraction: float, width: int) -> str:
    """A bar of ``fraction`` (0..1) of ``width`` cells, in eighths of a cell."""
    eighths = int(round(max(0.0, min(1.0, fraction)) * width * 8))
    full, rest = divmod(eighths, 8)
    return ("█" * full + (_EIGHTHS[rest] if rest else "")).ljust(width)


def bin_label(lo: int, hi: int) -> str:
    """Distances lo..hi-1 as a short label."""
    return f"{lo}" if hi - lo == 1 else f"{lo}-{hi - 1}"


class DistanceHistogram(Widget):
    """One row per distance bin: label, share of |relevance| as a bar, the signed sum."""

    DEFAULT_CSS = """
    DistanceHistogram { height: auto; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.profile = None  # lrp_llm.analyses.longrange.DistanceBins
        self.far = 0

    def show(self, profile, far: int) -> None:
        """``profile``: a ``DistanceBins``; bins entirely beyond ``far`` tokens are drawn bold."""
        self.profile, self.far = profile, far
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        if self.profile is None:
            return 1
        return len(self.profile.edges) - 1 + 1

    def render(self) -> Text:
        p = self.profile
        if p is None:
            return Text("no explanation yet", style="dim italic")
        width = max(4, self.size.width - 28)
        shares = p.share
        text = Text()
        text.append(f"{'distance':>9}  {'share of |R|':<{width}} {'ΣR':>8}  n\n", style="dim")
        for k in range(len(p.edges) - 1):
            lo, hi = p.edges[k], p.edges[k + 1]
            far = lo > self.far
            color = POSITIVE if p.signed[k] >= 0 else NEGATIVE
            text.append(f"{bin_label(lo, hi):>9}  ", style="bold" if far else "")
            text.append(bar(float(shares[k]), width), style=Style(color=color.rich_color))
            text.append(f" {p.signed[k]:+8.3f}  {int(p.counts[k])}")
            if k < len(p.edges) - 2:
                text.append("\n")
        return text
