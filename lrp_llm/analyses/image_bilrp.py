"""BiLRP on image embeddings: which patch pairs make two images similar to a vision tower.

The original use of BiLRP (Eberle et al., TPAMI 2022). For the image embedding ``phi``
(a CLIP or SigLIP tower's ``pooler_output``) and ``y = <phi(a), phi(b)>``::

    R[p, q] = sum_m  C_a[m, p] * C_b[m, q]

where ``C_a[m, p]`` is the LRP relevance of patch ``p`` of image ``a`` for embedding
dimension ``m``: gradient x input of the pixels under the rules, summed over the patch's
pixels and channels. Under CP-LRP on a bias-free tower with zero CLS and position
embeddings ``sum_p C_a[m, p] = phi(a)[m]``, so ``sum R = y``; in cosine mode both norms are
held constant. The rows of ``C`` are computed as one batch of cotangents per ``chunk``
embedding dimensions (one backward pass each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lrp_llm.errors import InputError

RULES: tuple[str, ...] = ("cp-lrp", "attnlrp")
MODES: tuple[str, ...] = ("cosine", "dot")


@dataclass
class ImagePatchMap:
    """First-order explanation of one image's embedding: ``embedding`` (D,), ``contributions`` (D, rows * cols)
    (patch ``p`` at row ``p // cols``), ``grid`` (rows, cols)."""

    embedding: np.ndarray
    contributions: np.ndarray
    grid: tuple[int, int]

    @property
    def conservation(self) -> float:
        """``sum C / sum phi`` over dimensions weighted by ``phi`` (1.0 without biases and learned tokens)."""
        phi = self.embedding
        denom = float(phi @ phi)
        return float(phi @ self.contributions.sum(1)) / denom if denom else float("nan")


@dataclass
class ImageSimilarityExplanation:
    """Patch-pair interactions (rows * cols of a, rows * cols of b) of two images' embedding similarity."""

    rules: str
    mode: str
    similarity: float  # cosine of the two embeddings
    dot: float
    interactions: np.ndarray
    grid_a: tuple[int, int]
    grid_b: tuple[int, int]
    meta: dict = field(default_factory=dict)

    @property
    def interaction_sum(self) -> float:
        return float(self.interactions.sum())


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"unknown {name} '{value}'; choose one of: {', '.join(allowed)}")


def image_patch_map(model, pixel_values, *, rules: str = "cp-lrp", chunk: int = 64) -> ImagePatchMap:
    """``C`` and ``phi`` of one image: ``pixel_values`` (1, C, H, W) preprocessed for ``model`` (a vision tower)."""
    import torch

    from lrp_llm.archs import get_arch
    from lrp_llm.engines.vision import _patch_size, patch_sums, pixel_projection
    from lrp_llm.mechanism.context import lrp_rules
    from lrp_llm.mechanism.patch import freeze_parameters

    _check("rule set", rules, RULES)
    if get_arch(model).kind != "image-encoder":
        raise InputError("image BiLRP explains vision towers (clip_vision_model, siglip_vision_model) only")
    if chunk < 1:
        raise InputError("chunk must be at least 1")
    weight = pixel_projection(model).weight
    x0 = pixel_values.to(device=weight.device, dtype=weight.dtype)
    if x0.dim() != 4 or x0.shape[0] != 1:
        raise InputError("pass one image: pixel values of shape (1, channels, height, width)")
    ph, pw = _patch_size(model)
    grid = (x0.shape[-2] // ph, x0.shape[-1] // pw)
    with lrp_rules(model, rules) as patch, torch.enable_grad():
        freeze_parameters(model, patch)
        x = x0.clone().requires_grad_(True)
        phi = model(pixel_values=x).pooler_output[0]  # (D,)
        dims = phi.shape[0]
        rows = torch.empty(dims, grid[0] * grid[1], dtype=torch.float64)
        eye = torch.eye(dims, dtype=phi.dtype, device=phi.device)
        for start in range(0, dims, chunk):
            stop = min(dims, start + chunk)
            (g,) = torch.autograd.grad(phi, x, grad_outputs=eye[start:stop], retain_graph=True, is_grads_batched=True)
            pixels = (g[:, 0] * x0[0]).sum(1)  # (c, H, W): relevance per pixel, channels summed
            rows[start:stop] = patch_sums(pixels.double(), (ph, pw)).reshape(stop - start, -1).cpu()
    return ImagePatchMap(phi.detach().double().cpu().numpy(), rows.numpy(), grid)


def explain_image_similarity(
    model,
    image_a,
    image_b,
    *,
    processor=None,
    rules: str = "cp-lrp",
    mode: str = "cosine",
    chunk: int = 64,
) -> ImageSimilarityExplanation:
    """Why two images look alike to a vision tower: patch-pair BiLRP interactions.

    ``image_a`` / ``image_b``: file paths, Pillow images, (H, W, 3) uint8 arrays or pixel
    values (1, C, H, W); ``processor``: the checkpoint's image processor (None: resize to the
    tower's size, scale to [-1, 1]). In cosine mode the interactions sum to the cosine
    (exactly under CP-LRP without biases and learned tokens).
    """
    from lrp_llm.engines.vision import _pixel_values

    _check("mode", mode, MODES)
    maps = [
        image_patch_map(model, _pixel_values(model, processor, im)[0], rules=rules, chunk=chunk)
        for im in (image_a, image_b)
    ]
    a, b = maps
    r = a.contributions.T @ b.contributions
    dot = float(a.embedding @ b.embedding)
    norms = float(np.linalg.norm(a.embedding) * np.linalg.norm(b.embedding))
    if mode == "cosine":
        r = r / norms if norms else r * 0.0
    return ImageSimilarityExplanation(
        rules=rules,
        mode=mode,
        similarity=dot / norms if norms else float("nan"),
        dot=dot,
        interactions=r,
        grid_a=a.grid,
        grid_b=b.grid,
        meta={"conservation_a": a.conservation, "conservation_b": b.conservation},
    )


__all__ = ["ImagePatchMap", "ImageSimilarityExplanation", "explain_image_similarity", "image_patch_map"]
