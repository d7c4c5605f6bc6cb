"""The explanation of an image classifier's class score (:class:`ImageAttribution`) and the
PNG helpers that store its picture inside the JSON and the report."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrp_llm.methods import method_names
from lrp_llm.results.base import REQUIRED, Fields, JsonResult


@dataclass
class ImageAttribution(JsonResult):
    """The explanation of one class score of one image.

    ``image``: (H, W, 3) uint8, the picture as the model saw it (after resizing);
    ``pixel_relevance``: (H, W); ``patch_relevance``: (H / patch_h, W / patch_w), row-major
    like the model's patch tokens.
    """

    model: str
    method: str
    label: str
    label_id: int
    logit: float
    probability: float
    image: np.ndarray
    pixel_relevance: np.ndarray
    patch_relevance: np.ndarray
    patch_size: tuple[int, int]
    top_labels: list[tuple[str, float]] = field(default_factory=list)
    relevance_sum: float = float("nan")
    source: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    SCHEMA = "xai-tui/image-attribution/1"

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.uint8)
        self.pixel_relevance = np.asarray(self.pixel_relevance, dtype=np.float32)
        self.patch_relevance = np.asarray(self.patch_relevance, dtype=np.float32)
        self.patch_size = (int(self.patch_size[0]), int(self.patch_size[1]))
        if self.relevance_sum != self.relevance_sum:
            self.relevance_sum = float(self.pixel_relevance.astype(np.float64).sum())

    @property
    def conservation(self) -> float:
        """Sum of pixel relevance / explained logit."""
        return self.relevance_sum / self.logit if self.logit else float("nan")

    def top_patches(self, k: int = 5) -> list[int]:
        """Row-major indices of the ``k`` most relevant patches."""
        order = np.argsort(-self.patch_relevance.ravel(), kind="stable")
        return [int(i) for i in order[:k]]

    def _fields(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "method": self.method,
            "label": self.label,
            "label_id": self.label_id,
            "logit": self.logit,
            "probability": self.probability,
            "relevance_sum": self.relevance_sum,
            "conservation": self.conservation,
            "top_labels": [[name, float(p)] for name, p in self.top_labels],
            "patch_size": list(self.patch_size),
            "patch_relevance": self.patch_relevance.tolist(),
            "pixel_relevance": self.pixel_relevance.tolist(),
            "image_png": png_base64(self.image),
            "source": self.source,
            "seconds": self.seconds,
            "timings": dict(self.timings),
            "meta": dict(self.meta),
        }

    @classmethod
    def _from_fields(cls, d: Fields) -> ImageAttribution:
        text = d.text("image_png")
        try:
            image = decode_png(text)
        except Exception:  # noqa: BLE001 - any decoding failure means the same: not a PNG
            d.fail("image_png", "is not a base64-encoded PNG image")
        h, w = image.shape[:2]
        patch = d.integers("patch_size", length=2, because="it is (height, width)", low=1)
        if h % patch[0] or w % patch[1]:
            d.fail("patch_size", f"is {patch} but the image is {h}x{w}, not a whole number of patches")
        grid = (h // patch[0], w // patch[1])
        return cls(
            model=d.text("model"),
            method=d.text("method", choices=method_names("image-classification")),
            label=d.text("label"),
            label_id=d.integer("label_id", low=0),
            logit=d.number("logit", REQUIRED),
            probability=d.number("probability"),
            image=image,
            pixel_relevance=d.matrix("pixel_relevance", (h, w), because=f"the image is {h}x{w} pixels"),
            patch_relevance=d.matrix("patch_relevance", grid, because=f"the image is {grid[0]}x{grid[1]} patches"),
            patch_size=(patch[0], patch[1]),
            top_labels=d.labelled_numbers("top_labels"),
            relevance_sum=d.number("relevance_sum"),
            source=d.optional_text("source"),
            seconds=d.number("seconds", 0.0),
            timings=d.number_map("timings"),
            meta=d.mapping("meta"),
        )


def png_base64(image: np.ndarray) -> str:
    """(H, W, 3) or (H, W) uint8 -> base64 PNG text."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(text: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(text))) as im:
        return np.asarray(im.convert("RGB"))


__all__ = ["ImageAttribution", "decode_png", "png_base64"]
