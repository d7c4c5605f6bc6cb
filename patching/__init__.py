"""Interventions, activation-patching sweeps and LRP attribution patching (RelP).

``from patching import intervene, replace, run_with_cache, cut_edges, run_patching``.
Heavy modules (torch, transformers) are imported on first use, so importing the
package is cheap; it never imports Textual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_LAZY = {
    "Site": "patching.sites",
    "SiteMap": "patching.sites",
    "site_map": "patching.sites",
    "Intervention": "patching.interventions",
    "ActivationCache": "patching.interventions",
    "intervene": "patching.interventions",
    "run_with_cache": "patching.interventions",
    "replace": "patching.interventions",
    "set_to": "patching.interventions",
    "add": "patching.interventions",
    "scale": "patching.interventions",
    "zero": "patching.interventions",
    "mean_ablate": "patching.interventions",
    "AttentionEdge": "patching.edges",
    "EdgeEdit": "patching.edges",
    "cut_edges": "patching.edges",
    "scale_edges": "patching.edges",
    "edit_edges": "patching.edges",
    "sweep": "patching.sweeps",
    "attribution_patching": "patching.relp",
    "pearson": "patching.relp",
    "run_patching": "patching.experiment",
    "Grid": "patching.result",
    "PatchingResult": "patching.result",
    "attention_knockout": "patching.recipes",
    "ablate_components": "patching.ablation",
    "AblationResult": "patching.ablation",
    "patch_last_token": "patching.recipes",
    "overwrite_attribute": "patching.recipes",
}

if TYPE_CHECKING:  # names for type checkers and IDEs; loaded lazily below
    from .ablation import AblationResult, ablate_components  # noqa: F401
    from .edges import AttentionEdge, EdgeEdit, cut_edges, edit_edges, scale_edges  # noqa: F401
    from .experiment import run_patching  # noqa: F401
    from .interventions import (  # noqa: F401
        ActivationCache,
        Intervention,
        add,
        intervene,
        mean_ablate,
        replace,
        run_with_cache,
        scale,
        set_to,
        zero,
    )
    from .recipes import attention_knockout, overwrite_attribute, patch_last_token  # noqa: F401
    from .relp import attribution_patching, pearson  # noqa: F401
    from .result import Grid, PatchingResult  # noqa: F401
    from .sites import Site, SiteMap, site_map  # noqa: F401
    from .sweeps import sweep  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'patching' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
