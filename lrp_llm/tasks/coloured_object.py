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


def top_patch_hits(model, items: list[Sample], method: str = "cp-lrp") -> list[bool]:
    """For each image: is the most relevant patch (for the true class) the object's patch?"""
    import torch

    from ..vision import image_relevance, patch_sums

    hits = []
    x = torch.from_numpy(pixel_values(np.stack([s.image for s in items])))
    for i, s in enumerate(items):
        out = image_relevance(model, x[i : i + 1], s.label, method=method)
        patches = patch_sums(out["pixels"].numpy(), (PATCH_SIZE, PATCH_SIZE))  # type: ignore[union-attr]
        hits.append(int(np.argmax(patches)) == s.patch)
    return hits


def localisation_accuracy(model, items: list[Sample], method: str = "cp-lrp") -> float:
    """Share of images whose most relevant patch is the object's."""
    hits = top_patch_hits(model, items, method)
    return sum(hits) / len(hits)
