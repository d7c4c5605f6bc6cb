"""Self-contained HTML of an :class:`~lrp_llm.vision.ImageAttribution`.

One file, inline CSS, images embedded as PNG data URIs, no script and no network
request: the image as the model saw it, the pixel heatmap, the heatmap laid over the
image, and the per-patch relevance as a table. Red supports the class, blue speaks
against it.
"""

from __future__ import annotations

import html

import numpy as np

from ..vision import ImageAttribution, png_base64

# Heatmap colours saturate at this quantile of |relevance| so one pixel cannot wash out the rest.
_QUANTILE = 0.995


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
    return (
        f"<figure><img alt='{html.escape(alt)}' width='{width}' src='data:image/png;base64,{png_base64(rgb)}'>"
        f"<figcaption>{html.escape(alt)}</figcaption></figure>"
    )


def image_attribution_html(a: ImageAttribution, title: str | None = None) -> str:
    esc = html.escape
    title = title or f"{a.method} explanation of '{a.label}' — {a.model}"
    h, w = a.pixel_relevance.shape
    width = max(256, w)  # small inputs are shown enlarged, pixel by pixel
    patch_scale = float(np.abs(a.patch_relevance).max()) if a.patch_relevance.size else 0.0
    top = set(a.top_patches(1))
    cells = []
    cols = a.patch_relevance.shape[1]
    for i, row in enumerate(a.patch_relevance):
        tds = []
        for j, v in enumerate(row):
            r, g, b = heatmap_rgb(np.array([[v]]), patch_scale)[0, 0]
            mark = " class='top'" if i * cols + j in top else ""
            tds.append(f"<td{mark} style='background:rgb({r},{g},{b})'>{v:.3g}</td>")
        cells.append("<tr>" + "".join(tds) + "</tr>")
    labels = "".join(f"<tr><td>{esc(n)}</td><td>{p:.3f}</td></tr>" for n, p in a.top_labels)
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{esc(title)}</title><style>",
            "body{font-family:system-ui,sans-serif;margin:2em;color:#111;max-width:70em}",
            "img{image-rendering:pixelated;border:1px solid #ccc}figure{display:inline-block;margin:0 1em 1em 0}",
            "figcaption{text-align:center;color:#555}table{border-collapse:collapse;margin:.5em 0 1.5em}",
            "td,th{padding:.2em .6em;text-align:left;border-bottom:1px solid #eee}",
            ".patches td{font-family:ui-monospace,monospace;font-size:.8em;text-align:right;border:1px solid #ddd}",
            ".patches td.top{outline:2px solid #222}",
            "</style></head><body>",
            f"<h1>{esc(title)}</h1><table>",
            f"<tr><th>model</th><td>{esc(a.model)}</td></tr>",
            f"<tr><th>image</th><td>{esc(a.source or '(in memory)')}</td></tr>",
            f"<tr><th>method</th><td>{esc(a.method)}</td></tr>",
            f"<tr><th>explained class</th><td>{esc(a.label)} (index {a.label_id}), logit {a.logit:.3f}, "
            f"p {a.probability:.3f}</td></tr>",
            f"<tr><th>&Sigma; pixel relevance / logit</th><td>{a.conservation:.3f}</td></tr>",
            f"<tr><th>date</th><td>{esc(str(a.meta.get('date', '')))}</td></tr>",
            f"<tr><th>seconds</th><td>{a.seconds:.2f}</td></tr></table>",
            _img(a.image, f"input ({w}×{h}, as the model saw it)", width),
            _img(heatmap_rgb(a.pixel_relevance), "pixel relevance", width),
            _img(overlay_rgb(a.image, a.pixel_relevance), "overlay", width),
            "<p>Red supports the class, blue speaks against it; colours saturate at the "
            f"{_QUANTILE:.1%} quantile of |relevance|.</p>",
            f"<h2>Relevance per patch ({a.patch_size[0]}×{a.patch_size[1]} pixels; outlined: the most relevant)</h2>",
            "<table class='patches'>",
            *cells,
            "</table><h2>Top classes</h2><table><tr><th>class</th><th>p</th></tr>",
            labels,
            "</table></body></html>",
        ]
    )
