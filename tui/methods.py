"""Attribution methods offered in the app, with their display names (no torch import)."""

from __future__ import annotations

METHOD_LABELS = {
    "attnlrp": "AttnLRP",
    "cp-lrp": "CP-LRP",
    "mambalrp": "MambaLRP",
    "grad-x-input": "Gradient × input",
    "saliency": "Saliency",
    "integrated-gradients": "Integrated gradients",
    "hidden-attention": "Hidden attention",
    "random": "Random",
}
METHODS: tuple[str, ...] = tuple(METHOD_LABELS)


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)
