"""Layer-wise relevance propagation for transformers language models.

``from lrp_llm import load_model, explain``. Heavy modules (torch, transformers) are
imported on first use, so importing the package is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Attribution": "lrp_llm.results.attribution",
    "TargetRelevance": "lrp_llm.results.attribution",
    "explain": "lrp_llm.engines.explain",
    "relevance": "lrp_llm.engines.causal_lm",
    "METHODS": "lrp_llm.methods",
    "methods_for": "lrp_llm.methods",
    "build_prompt_ids": "lrp_llm.engines.generation",
    "load_model": "lrp_llm.checkpoints.loading",
    "lrp_rules": "lrp_llm.mechanism.context",
    "XaiError": "lrp_llm.errors",
    "explain_image": "lrp_llm.engines.vision",
    "ImageAttribution": "lrp_llm.results.image",
    "load_encoder": "lrp_llm.checkpoints.loading",
    "explain_similarity": "lrp_llm.analyses.bilrp",
    "SimilarityExplainer": "lrp_llm.analyses.bilrp",
    "SimilarityExplanation": "lrp_llm.results.similarity",
    "ComponentRelevance": "lrp_llm.results.components",
    "ComponentSpec": "lrp_llm.mechanism.components",
    "conditional_relevance": "lrp_llm.analyses.components",
}

if TYPE_CHECKING:  # names for type checkers and IDEs; loaded lazily below
    from lrp_llm.analyses.bilrp import SimilarityExplainer, explain_similarity  # noqa: F401
    from lrp_llm.analyses.components import conditional_relevance  # noqa: F401
    from lrp_llm.checkpoints.loading import load_encoder, load_model  # noqa: F401
    from lrp_llm.engines.causal_lm import relevance  # noqa: F401
    from lrp_llm.engines.explain import explain  # noqa: F401
    from lrp_llm.engines.generation import build_prompt_ids  # noqa: F401
    from lrp_llm.engines.vision import explain_image  # noqa: F401
    from lrp_llm.errors import XaiError  # noqa: F401
    from lrp_llm.mechanism.components import ComponentSpec  # noqa: F401
    from lrp_llm.mechanism.context import lrp_rules  # noqa: F401
    from lrp_llm.methods import METHODS, methods_for  # noqa: F401
    from lrp_llm.results.attribution import Attribution, TargetRelevance  # noqa: F401
    from lrp_llm.results.components import ComponentRelevance  # noqa: F401
    from lrp_llm.results.image import ImageAttribution  # noqa: F401
    from lrp_llm.results.similarity import SimilarityExplanation  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lrp_llm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
