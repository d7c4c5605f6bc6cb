"""Colour maps of image relevance (used by the report's image section, :mod:`.image_section`).

Red supports the class, blue speaks against it.
"""

from __future__ import annotations

import numpy as np

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
