"""Image section (ViT): the image as the model saw it, the pixel heatmap, the heatmap laid
over the image (PNG data URIs), the per-patch relevance as an SVG grid with values on
hover, and the top classes.

Input: a :class:`~lrp_llm.engines.vision.ImageAttribution` (``image`` (H, W, 3) uint8,
``pixel_relevance`` (H, W), ``patch_relevance`` (rows, cols), ``patch_size``,
``top_labels``, ``label``, ``label_id``, ``logit``, ``probability``, ``conservation``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lrp_llm.export.common import esc, fmt, legend
from lrp_llm.export.grid_svg import grid_svg

CSS = (
    "img.px{image-rendering:pixelated;border:1px solid #ccc}figure{display:inline-block;margin:0 1em 1em 0;"
    "vertical-align:top}figcaption{text-align:center;color:#555;font-size:.9em}"
)


def _img(rgb: np.ndarray, alt: str, width: int) -> str:
    from lrp_llm.engines.vision import png_base64

    return (
        f"<figure><img class='px' alt='{esc(alt)}' width='{width}' src='data:image/png;base64,{png_base64(rgb)}'>"
        f"<figcaption>{esc(alt)}</figcaption></figure>"
    )


def render(a: Any) -> str:
    from lrp_llm.export.image_html import _QUANTILE, heatmap_rgb, overlay_rgb

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
