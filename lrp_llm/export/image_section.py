"""Image section (ViT): the image as the model saw it, the pixel heatmap, the heatmap laid
over the image (PNG data URIs), the per-patch relevance as an SVG grid with values on
hover, and the top classes. Red supports the class, blue speaks against it.

Input: a :class:`~lrp_llm.results.image.ImageAttribution` (``image`` (H, W, 3) uint8,
``pixel_relevance`` (H, W), ``patch_relevance`` (rows, cols), ``patch_size``,
``top_labels``, ``label``, ``label_id``, ``logit``, ``probability``, ``conservation``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lrp_llm.export.common import esc, fmt, legend
from lrp_llm.export.grid_svg import grid_svg

# Heatmap colours saturate at this quantile of |relevance| so one pixel cannot wash out the rest.
_QUANTILE = 0.995

CSS = (
    "img.px{image-rendering:pixelated;border:1px solid #ccc}figure{display:inline-block;margin:0 1em 1em 0;"
    "vertical-align:top}figcaption{text-align:center;color:#555;font-size:.9em}"
)


def heatmap_rgb(relevance: np.ndarray, scale: float | None = None) -> np.ndarray:
    """(H, W) relevance -> (H, W, 3) uint8: white at 0, red positive, blue negative."""
    r = np.asarray(relevance, dtype=np.float64)
    if scale is None:
        scale = float(np.quantile(np.abs(r), _QUANTILE)) if r.size else 0.0
    v = np.clip(r / scale, -1.0, 1.0) if scale > 0 else np.zeros_like(r)
    fade = 1.0 - np.abs(v)
    out = np.stack([np.where(v >= 0, 1.0, fade), fade, np.where(v >= 0, fade, 1.0)], axis=-1)
    return np.round(out * 255).astype(np.uint8)


def overlay_rgb(image: np.ndarray, relevance: np.ndarray, scale: float | None = None) -> np.ndarray:
    """The image, greyed, with the heatmap blended in proportion to |relevance|."""
    r = np.asarray(relevance, dtype=np.float64)
    if scale is None:
        scale = float(np.quantile(np.abs(r), _QUANTILE)) if r.size else 0.0
    alpha = (np.clip(np.abs(r) / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(r))[..., None] * 0.8
    grey = image.astype(np.float64).mean(-1, keepdims=True) * 0.6 + image.astype(np.float64) * 0.4
    colour = np.where((r >= 0)[..., None], [255.0, 0.0, 0.0], [0.0, 60.0, 255.0])
    return np.round(grey * (1 - alpha) + colour * alpha).astype(np.uint8)


def _img(rgb: np.ndarray, alt: str, width: int) -> str:
    from lrp_llm.results.image import png_base64

    return (
        f"<figure><img class='px' alt='{esc(alt)}' width='{width}' src='data:image/png;base64,{png_base64(rgb)}'>"
        f"<figcaption>{esc(alt)}</figcaption></figure>"
    )


def render(a: Any) -> str:
    h, w = a.pixel_relevance.shape
    width = max(256, w)  # small inputs are shown enlarged, pixel by pixel
    grid = np.asarray(a.patch_relevance, dtype=np.float64)
    n_r, n_c = grid.shape
    svg, scale = grid_svg(
        grid,
        [f"row {i}" for i in range(n_r)],
        [f"col {j}" for j in range(n_c)],
        lambda r, c, v: f"patch (row {r}, col {c}): {fmt(v)}",
        cell=max(12.0, min(40.0, 480 / max(n_c, 1))),
        label="relevance per patch",
    )
    labels = "".join(f"<tr><td>{esc(name)}</td><td class='num'>{esc(fmt(p, 3))}</td></tr>" for name, p in a.top_labels)
    ph, pw = a.patch_size
    return (
        "<section id='image'><h2>Relevance per pixel</h2>"
        + _img(a.image, f"input ({w}\u00d7{h}, as the model saw it)", width)
        + _img(heatmap_rgb(a.pixel_relevance), "pixel relevance", width)
        + _img(overlay_rgb(a.image, a.pixel_relevance), "overlay", width)
        + f"<p class='note'>Red supports the class, blue speaks against it; colours saturate at the "
        f"{_QUANTILE:.1%} quantile of |relevance|.</p>"
        f"<h2>Relevance per patch ({ph}\u00d7{pw} pixels)</h2>{legend('max |patch relevance|', scale=scale)}"
        f"<div class='scroll'>{svg}</div>"
        f"<h2>Top classes</h2><table class='list'><tr><th>class</th><th>p</th></tr>{labels}</table></section>"
    )


__all__ = ["CSS", "render"]
