"""Layer-wise relevance propagation for transformers language models.

``from lrp_llm import load_model, explain``. Heavy modules (torch, transformers) are
imported on first use, so importing the package is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Attribution": "lrp_llm.attribution",
    "TargetRelevance": "lrp_llm.attribution",
    "explain": "lrp_llm.explanation",
    "relevance": "lrp_llm.explanation",
    "METHODS": "lrp_llm.explanation",
    "build_prompt_ids": "lrp_llm.explanation",
    "load_model": "lrp_llm.loading",
    "lrp_rules": "lrp_llm.context",
    "XaiError": "lrp_llm.errors",
    "explain_seq2seq": "lrp_llm.seq2seq",
    "explain_image": "lrp_llm.vision",
    "ImageAttribution": "lrp_llm.vision",
    "load_encoder": "lrp_llm.loading",
    "explain_similarity": "lrp_llm.bilrp",
    "SimilarityExplainer": "lrp_llm.bilrp",
    "SimilarityExplanation": "lrp_llm.bilrp",
}

if TYPE_CHECKING:  # names for type checkers and IDEs; loaded lazily below
    from .attribution import Attribution, TargetRelevance  # noqa: F401
    from .bilrp import SimilarityExplainer, SimilarityExplanation, explain_similarity  # noqa: F401
    from .context import lrp_rules  # noqa: F401
    from .errors import XaiError  # noqa: F401
    from .explanation import METHODS, build_prompt_ids, explain, relevance  # noqa: F401
    from .loading import load_encoder, load_model  # noqa: F401
    from .seq2seq import explain_seq2seq  # noqa: F401
    from .vision import ImageAttribution, explain_image  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lrp_llm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
