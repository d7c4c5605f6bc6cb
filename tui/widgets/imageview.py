"""An image drawn with half-block cells, optionally overlaid with relevance per patch.

Each terminal cell shows two pixels stacked vertically: "▀" with the foreground set to
the top pixel and the background to the bottom one, so it works in every terminal
with true colour (Textual downgrades the colours for the others). The image is fitted
to the widget: enlarged by a whole factor when it is small (each pixel stays a crisp
block), averaged over boxes of pixels when it is too large.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.color import Color
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from .tokenflow import NEGATIVE, POSITIVE, relevance_level

Overlay = Literal["image", "relevance", "blend"]
OVERLAYS: tuple[Overlay, ...] = ("image", "relevance", "blend")
HALF_BLOCK = "▀"
BLEND = 0.65  # how far a pixel moves toward red / blue at full relevance in the blend


def fit_rows_columns(height: int, width: int, max_height: int, max_width: int) -> tuple[int, int]:
    """The (rows, columns) in pixels an image of ``height`` x ``width`` is drawn at within
    ``max_height`` x ``max_width`` pixels: a whole multiple when it fits (aspect kept), else
    scaled down with its aspect kept (at least one pixel each way)."""
    if height <= 0 or width <= 0 or max_height <= 0 or max_width <= 0:
        return 0, 0
    factor = min(max_height // height, max_width // width)
    if factor >= 1:
        return height * factor, width * factor
    scale = min(max_height / height, max_width / width)
    return max(1, int(height * scale)), max(1, int(width * scale))


def _bounds(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source index ranges [start, stop) of each of ``out`` output pixels over ``size`` source pixels."""
    edges = (np.arange(out + 1) * size) // out
    start = edges[:-1]
    stop = np.maximum(edges[1:], start + 1)  # enlarging: a source pixel is repeated
    return start, stop


def fit_pixels(image: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """``image`` (H, W, 3) uint8 resampled to (rows, columns, 3) uint8: each output pixel is the
    mean of the source box it covers (a repeated source pixel when enlarging)."""
    src = np.asarray(image, dtype=np.float64)
    r0, r1 = _bounds(src.shape[0], rows)
    c0, c1 = _bounds(src.shape[1], columns)
    # summed-area table: every box mean in O(1)
    table = np.zeros((src.shape[0] + 1, src.shape[1] + 1, src.shape[2]))
    table[1:, 1:] = src.cumsum(0).cumsum(1)
    box = table[r1][:, c1] - table[r0][:, c1] - table[r1][:, c0] + table[r0][:, c0]
    area = ((r1 - r0)[:, None] * (c1 - c0)[None, :])[..., None]
    return np.clip(np.round(box / area), 0, 255).astype(np.uint8)


def patch_index(size: int, out: int, patch: int) -> np.ndarray:
    """For each of ``out`` output pixels along an axis of ``size`` source pixels: the patch its centre lies in."""
    centre = np.minimum(((np.arange(out) + 0.5) * size / out).astype(int), size - 1)
    return centre // patch


class ImageView(Widget):
    """``image`` (H, W, 3) uint8 with ``patch_relevance`` (H / ph, W / pw) shown as ``overlay``."""

    DEFAULT_CSS = """
    ImageView { width: 1fr; height: 1fr; }
    """

    overlay: reactive[Overlay] = reactive("blend")
    """"image" (the pixels), "relevance" (the per-patch heatmap) or "blend" (the heatmap over the pixels)."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.image: np.ndarray | None = None
        self.patch_relevance: np.ndarray | None = None
        self.patch_size = (1, 1)
        self.scale = 0.0  # the |relevance| drawn at full strength: the largest |patch relevance|
        self._cache: tuple[tuple[int, int, str], list[Strip]] | None = None

    def show(self, image: np.ndarray, patch_relevance: np.ndarray | None, patch_size: tuple[int, int]) -> None:
        """Draw ``image``; ``patch_relevance`` None: no overlay (only the pixels)."""
        self.image = np.asarray(image, dtype=np.uint8)
        self.patch_relevance = None if patch_relevance is None else np.asarray(patch_relevance, dtype=np.float64)
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))
        rel = self.patch_relevance
        self.scale = float(np.abs(rel).max()) if rel is not None and rel.size else 0.0
        self._cache = None
        self.refresh()

    def watch_overlay(self) -> None:
        self._cache = None
        self.refresh()

    def on_resize(self) -> None:
        self._cache = None

    def fitted(self) -> np.ndarray:
        """The image's pixels as drawn now (rows, columns, 3), before the overlay."""
        if self.image is None:
            return np.zeros((0, 0, 3), dtype=np.uint8)
        rows, columns = fit_rows_columns(*self.image.shape[:2], 2 * self.size.height, self.size.width)
        return fit_pixels(self.image, rows, columns)

    def colours(self) -> np.ndarray:
        """(rows, columns, 3) uint8: the drawn pixels with the current overlay applied."""
        pixels = self.fitted()
        rel = self.patch_relevance
        if self.overlay == "image" or rel is None or pixels.size == 0 or self.image is None:
            return pixels
        rows, columns = pixels.shape[:2]
        ph, pw = self.patch_size
        values = rel[patch_index(self.image.shape[0], rows, ph)][:, patch_index(self.image.shape[1], columns, pw)]
        levels = np.vectorize(lambda v: relevance_level(v, self.scale))(values) if self.scale > 0 else values * 0
        hue = np.where(levels[..., None] >= 0, np.array(POSITIVE.rgb), np.array(NEGATIVE.rgb)).astype(np.float64)
        if self.overlay == "relevance":
            base = np.broadcast_to(np.array(self.background_colors[1].rgb, dtype=np.float64), pixels.shape)
            amount = np.abs(levels)[..., None]
        else:
            base = pixels.astype(np.float64)
            amount = BLEND * np.abs(levels)[..., None]
        return np.clip(np.round(base + (hue - base) * amount), 0, 255).astype(np.uint8)

    def _strips(self) -> list[Strip]:
        key = (self.size.width, self.size.height, self.overlay)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        colours = self.colours()
        strips: list[Strip] = []
        rows, columns = colours.shape[:2]
        left = (self.size.width - columns) // 2
        pad = Segment(" " * left, self.rich_style) if left > 0 else None
        for y in range((rows + 1) // 2):
            top = colours[2 * y]
            bottom = colours[2 * y + 1] if 2 * y + 1 < rows else None
            segments = [pad] if pad else []
            for x in range(columns):
                fg = Color(*map(int, top[x])).rich_color
                bg = None if bottom is None else Color(*map(int, bottom[x])).rich_color
                segments.append(Segment(HALF_BLOCK, Style(color=fg, bgcolor=bg)))
            strips.append(Strip(segments, left + columns if left > 0 else columns))
        self._cache = (key, strips)
        return strips

    def render_line(self, y: int) -> Strip:
        strips = self._strips()
        top = (self.size.height - len(strips)) // 2
        if 0 <= y - top < len(strips):
            return strips[y - top].extend_cell_length(self.size.width, self.rich_style)
        return Strip.blank(self.size.width, self.rich_style)
