"""Explain the class an image classifier (ViT) gives an image: relevance per pixel and per patch.

One forward and one backward pass under the method's rules. The relevance of a pixel is
``sum_c x[c, i, j] * grad[c, i, j]`` over its channels (the patch embedding is a linear
convolution, so nothing is changed there); the relevance of a patch is the sum over its
pixels. The conservation ratio is the sum of pixel relevance over the explained logit;
the CLS token, the position embeddings and the biases keep the rest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lrp_llm.errors import InputError
from lrp_llm.methods import check_offered, default_method, get_method
from lrp_llm.results.base import run_meta
from lrp_llm.results.image import ImageAttribution

# Pillow refuses images above this many pixels (decompression bombs); an explained
# image is resized to the model's input size anyway.
MAX_PIXELS = 64_000_000


def load_image(path: str | os.PathLike[str]):
    """Open an image file as an RGB Pillow image, or raise a one-line :class:`InputError`."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"no such image: {p}; pass a PNG or JPEG file with --image")
    if p.is_dir():
        raise InputError(f"{p} is a folder; pass an image file (PNG, JPEG) with --image")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except UnidentifiedImageError:
        raise InputError(f"{p} is not an image file Pillow can read; pass a PNG or JPEG file") from None
    except Image.DecompressionBombError:
        raise InputError(f"{p} has more than {MAX_PIXELS} pixels; downscale it first") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"{p} is truncated or corrupt ({' '.join(str(exc).split())[:120]}); pass another file"
        ) from None


def default_processor(size: int | Sequence[int]):
    """The standard ViT preprocessing (resize to ``size``, scale to [-1, 1]) for folders without their own."""
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return ViTImageProcessorPil(size={"height": h, "width": w}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def _pixel_values(model, processor, image):
    """(1, C, H, W) model input from a path, a Pillow image, an (H, W, 3) uint8 array or a ready tensor."""
    import torch

    if isinstance(image, torch.Tensor):
        x = image if image.dim() == 4 else image.unsqueeze(0)
        return x, None
    source = None
    if isinstance(image, (str, os.PathLike)):
        source = str(image)
        image = load_image(image)
    elif isinstance(image, np.ndarray):
        from PIL import Image

        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise InputError("an image array must be (height, width, 3) uint8 RGB")
        image = Image.fromarray(image)
    processor = processor if processor is not None else default_processor(vision_config(model).image_size)
    return processor(images=image, return_tensors="pt")["pixel_values"], source


def _display_image(processor, pixel_values) -> np.ndarray:
    """Undo rescaling and normalisation: (H, W, 3) uint8 of what the model saw."""
    x = pixel_values[0].detach().double().cpu().numpy().transpose(1, 2, 0)
    mean = getattr(processor, "image_mean", None) if processor is not None else [0.5] * 3
    std = getattr(processor, "image_std", None) if processor is not None else [0.5] * 3
    if mean is not None and std is not None and (processor is None or getattr(processor, "do_normalize", True)):
        x = x * np.asarray(std, dtype=np.float64) + np.asarray(mean, dtype=np.float64)
        x = np.clip(x, 0.0, 1.0)
    else:
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.round(x[..., :3] * 255).astype(np.uint8)


def _labels(model) -> dict[int, str]:
    id2label = getattr(model.config, "id2label", None) or {}
    n = int(getattr(model.config, "num_labels", len(id2label)) or len(id2label))
    return {i: str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)}


def resolve_label(model, target: int | str | None, predicted: int) -> int:
    """A class index from an index, a label name (case-insensitive) or None (the predicted class)."""
    labels = _labels(model)
    if target is None:
        return predicted
    if isinstance(target, str):
        by_name = {name.lower(): i for i, name in labels.items()}
        if target.strip().lower() in by_name:
            return by_name[target.strip().lower()]
        if not target.strip().lstrip("-").isdigit():
            shown = ", ".join(list(labels.values())[:12]) + (", ..." if len(labels) > 12 else "")
            raise InputError(f"unknown label '{target}'; the model's labels are: {shown} (or pass an index)")
        target = int(target)
    if not 0 <= int(target) < len(labels):
        raise InputError(
            f"label index {target} is out of range; the model has {len(labels)} classes (0..{len(labels) - 1})"
        )
    return int(target)


def vision_config(model):
    """The config with the image fields: the model's, or the ``vision_config`` of a CLIP / SigLIP classifier."""
    return getattr(model.config, "vision_config", None) or model.config


def pixel_projection(model):
    """The patch embedding's convolution (its weight sets the dtype and device of the pixels): the
    input embeddings' ``projection`` (ViT, DeiT, DINOv2) or the input embeddings themselves (CLIP, SigLIP)."""
    try:
        embeddings = model.get_input_embeddings()
    except NotImplementedError:  # CLIP's classifier does not say; its tower does
        embeddings = model.vision_model.get_input_embeddings()
    return getattr(embeddings, "projection", embeddings)


def _patch_size(model) -> tuple[int, int]:
    p = vision_config(model).patch_size
    return (p, p) if isinstance(p, int) else (int(p[0]), int(p[1]))


def patch_sums(pixel_relevance, patch_size: Sequence[int]):
    """(..., H, W) -> (..., H / ph, W / pw): relevance summed over each patch."""
    ph, pw = patch_size
    *lead, h, w = pixel_relevance.shape
    return pixel_relevance.reshape(*lead, h // ph, ph, w // pw, pw).sum(-1).sum(-2)


def image_relevance(
    model,
    pixel_values,
    target: int,
    *,
    method: str | None = None,
    steps: int = 32,
    seed: int = 0,
) -> dict[str, object]:
    """Pixel relevance (H, W) of class ``target`` for ``pixel_values`` (1, C, H, W), and the logits (n_classes,)."""

    from lrp_llm.mechanism.gradients import input_relevance, method_rules

    method = method or default_method(model)
    get_method(method, "image-classification")
    check_offered(model, method)
    weight = pixel_projection(model).weight
    x = pixel_values.to(device=weight.device, dtype=weight.dtype)
    logits_seen: list = []

    def score(xs):
        logits = model(pixel_values=xs[0]).logits  # (b, n_classes)
        logits_seen.append(logits[0].detach())
        return logits[:, [target]]

    t0 = time.perf_counter()
    with method_rules(model, method):
        (pixels,), values = input_relevance(score, [x], [1], method=method, steps=steps, seed=seed)
    from lrp_llm.engines.finite import check_finite

    check_finite(model, pixels)
    return {
        "pixels": pixels[0],
        "logit": float(values[0]),
        "logits": logits_seen[0].double().cpu(),
        "method": method,
        "seconds": time.perf_counter() - t0,
    }


def batch_image_relevance(model, pixel_values, targets: Sequence[int], *, method: str | None = None, steps: int = 32):
    """Pixel relevance (N, H, W) of class ``targets[i]`` for each image of ``pixel_values`` (N, C, H, W).

    Images in a batch do not interact, so for the gradient-based methods one backward
    pass of the summed target logits gives every image its own relevance (evaluation
    over many images); integrated gradients and the random baseline go one by one.
    """
    import torch

    from lrp_llm.mechanism.gradients import batch_relevance, method_rules

    method = method or default_method(model)
    if not get_method(method, "image-classification").batchable:
        rows = [
            image_relevance(model, pixel_values[i : i + 1], int(t), method=method, steps=steps, seed=i)["pixels"]
            for i, t in enumerate(targets)
        ]
        return torch.stack(rows)  # type: ignore[arg-type]
    check_offered(model, method)
    weight = pixel_projection(model).weight
    x = pixel_values.to(device=weight.device, dtype=weight.dtype)
    classes = torch.as_tensor(list(targets), device=weight.device)

    def score(xs):
        logits = model(pixel_values=xs[0]).logits  # (n_images, n_classes)
        return logits.gather(1, classes[:, None])  # (n_images, 1)

    with method_rules(model, method):
        (pixels,) = batch_relevance(score, [x], [1], method=method)
    return pixels[:, 0]


def explain_image(
    model,
    processor,
    image,
    *,
    target: int | str | None = None,
    method: str | None = None,
    steps: int = 32,
    seed: int = 0,
    model_name: str | None = None,
) -> ImageAttribution:
    """Explain the class score ``target`` (default: the predicted class) of ``image``.

    ``image``: a file path, a Pillow image, an (H, W, 3) uint8 array, or pixel values
    (1, C, H, W) already preprocessed; ``processor``: the checkpoint's image processor
    (None: resize and scale to [-1, 1]); ``method``: default the family's
    (:attr:`ArchSpec.default_method`).
    """
    import torch

    start = time.perf_counter()
    pixel_values, source = _pixel_values(model, processor, image)
    weight = pixel_projection(model).weight
    with torch.no_grad():
        was_training = model.training
        model.eval()
        try:
            logits = model(pixel_values=pixel_values.to(device=weight.device, dtype=weight.dtype)).logits[0]
        finally:
            model.train(was_training)
    label_id = resolve_label(model, target, int(logits.argmax()))
    result = image_relevance(model, pixel_values, label_id, method=method, steps=steps, seed=seed)
    pixels = result["pixels"].numpy()  # type: ignore[union-attr]
    ps = _patch_size(model)
    probs = torch.softmax(result["logits"], dim=-1)  # type: ignore[arg-type]
    labels = _labels(model)
    top = torch.argsort(probs, descending=True)[:5].tolist()
    return ImageAttribution(
        model=model_name or str(getattr(model, "name_or_path", "") or type(model).__name__),
        method=str(result["method"]),
        label=labels.get(label_id, str(label_id)),
        label_id=label_id,
        logit=float(result["logit"]),
        probability=float(probs[label_id]),
        image=_display_image(processor, pixel_values),
        pixel_relevance=pixels.astype(np.float32),
        patch_relevance=patch_sums(pixels.astype(np.float64), ps).astype(np.float32),
        patch_size=ps,
        top_labels=[(labels.get(i, str(i)), float(probs[i])) for i in top],
        relevance_sum=float(pixels.astype(np.float64).sum()),
        source=source,
        seconds=time.perf_counter() - start,
        timings={"explain": float(result["seconds"])},  # type: ignore[arg-type]
        meta=run_meta(
            "image-classification",
            method=str(result["method"]),
            rules=get_method(str(result["method"])).rules,
            steps=get_method(str(result["method"])).steps_or_none(steps),
            dtype=weight.dtype,
            device=weight.device,
        ),
    )


__all__ = ["batch_image_relevance", "explain_image", "image_relevance", "load_image", "patch_sums"]
