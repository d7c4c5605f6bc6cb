"""Coloured object on noise: an image task whose evidence sits in one known patch.

A 32 x 32 RGB image of grey noise holds one small square (4 x 4 pixels) of one of four
colours, placed entirely inside one 8 x 8 patch at a random place. The class is the
colour, so the only evidence is in that patch; an explanation is scored by whether its
most relevant patch is the object's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 32
PATCH_SIZE = 8
OBJECT_SIZE = 4
LABELS = ("red", "green", "blue", "yellow")
_COLOURS = np.array([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0], [1.0, 1.0, 0.1]])


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # (H, W, 3) uint8
    label: int
    patch: int  # row-major index of the patch that holds the object
    box: tuple[int, int, int, int]  # top, left, bottom, right (exclusive) in pixels


def samples(n: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    grid = IMAGE_SIZE // PATCH_SIZE
    out = []
    for _ in range(n):
        grey = rng.uniform(0.0, 1.0, size=(IMAGE_SIZE, IMAGE_SIZE, 1))
        image = np.clip(grey + rng.normal(0.0, 0.04, size=(IMAGE_SIZE, IMAGE_SIZE, 3)), 0.0, 1.0)
        label = int(rng.integers(len(LABELS)))
        patch = int(rng.integers(grid * grid))
        top = (patch // grid) * PATCH_SIZE + int(rng.integers(PATCH_SIZE - OBJECT_SIZE + 1))
        left = (patch % grid) * PATCH_SIZE + int(rng.integers(PATCH_SIZE - OBJECT_SIZE + 1))
        colour = np.clip(_COLOURS[label] + rng.uniform(-0.1, 0.1, size=3), 0.0, 1.0)
        image[top : top + OBJECT_SIZE, left : left + OBJECT_SIZE] = colour
        pixels = np.round(image * 255).astype(np.uint8)
        out.append(Sample(pixels, label, patch, (top, left, top + OBJECT_SIZE, left + OBJECT_SIZE)))
    return out


def pixel_values(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 as the saved image processor makes them."""
    x = images.astype(np.float32) / 255.0
    return ((x - 0.5) / 0.5).transpose(0, 3, 1, 2).copy()


def scores(model, items: list[Sample], method: str = "cp-lrp", batch: int = 100) -> dict[str, float]:
    """Two ground-truth scores of an explanation method, averaged over ``items``.

    ``top_patch``: share of images whose most relevant patch (for the true class) is the
    object's. ``object_mass``: mean share of the positive pixel relevance that lies on the
    object itself (a finer score where the first saturates).
    """
    import torch

    from lrp_llm.engines.vision import batch_image_relevance, patch_sums

    x = torch.from_numpy(pixel_values(np.stack([s.image for s in items])))
    hits, mass = [], []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        rel = batch_image_relevance(model, x[start : start + batch], [s.label for s in chunk], method=method).numpy()
        patches = patch_sums(rel.astype(np.float64), (PATCH_SIZE, PATCH_SIZE))
        for s, r, p in zip(chunk, rel, patches):
            hits.append(int(np.argmax(p)) == s.patch)
            pos = np.clip(r.astype(np.float64), 0.0, None)
            top, left, bottom, right = s.box
            mass.append(float(pos[top:bottom, left:right].sum() / pos.sum()) if pos.sum() > 0 else 0.0)
    return {"top_patch": float(np.mean(hits)), "object_mass": float(np.mean(mass))}
