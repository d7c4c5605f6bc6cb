"""The explanation of an image classifier's class score (:class:`ImageAttribution`) and the
PNG helpers that store its picture inside the JSON and the report."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrp_llm.results.base import JsonResult, as_float, float_array


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
    def _from_fields(cls, d: dict[str, Any]) -> ImageAttribution:
        return cls(
            model=str(d["model"]),
            method=str(d["method"]),
            label=str(d["label"]),
            label_id=int(d["label_id"]),
            logit=as_float(d["logit"]),
            probability=as_float(d.get("probability")),
            image=decode_png(d["image_png"]),
            pixel_relevance=float_array(d["pixel_relevance"]),
            patch_relevance=float_array(d["patch_relevance"]),
            patch_size=tuple(d["patch_size"]),
            top_labels=[(str(n), as_float(p)) for n, p in d.get("top_labels", [])],
            relevance_sum=as_float(d.get("relevance_sum")),
            source=d.get("source"),
            seconds=float(d.get("seconds", 0.0)),
            timings={k: float(v) for k, v in d.get("timings", {}).items()},
            meta=dict(d.get("meta", {})),
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
