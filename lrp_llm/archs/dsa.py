"""DeepSeek sparse attention (DSA) decoders: DeepSeek-V3.2 and GLM-MoE-DSA (GLM-5).

They are MLA decoders (:mod:`lrp_llm.archs.mla`) whose attention adds a "lightning indexer": a
small scorer that picks, per query, the ``index_topk`` keys the attention may see. The indexer
runs under ``torch.no_grad()`` and returns integer indices, so the selection enters the attention
only as a mask. That mask is piecewise constant in the input, like top-k expert routing: held
constant (which is what its gradient already does), every rule of the MLA attention applies
unchanged to the keys it keeps, and the masked keys get exactly zero relevance because their
probabilities are zero. GLM-MoE-DSA's "shared" layers reuse the previous indexer's selection,
the same constant. The indexer's own projections (``wq_b``, ``wk``, its LayerNorm ``k_norm``,
``weights_proj``) get no rule because no relevance flows through them.

One wiring detail needs this module: the attention builds the mask from the indices only when
its config names "eager" or "sdpa", and otherwise hands the indices to the kernel
(``indices=``). Under the rules the attention's config names the rules' function
(:func:`lrp_llm.archs.blocks.install_attention_function`), so the indices arrive there;
:func:`_masking` turns them into the same mask before the original eager/SDPA function runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import _RULES_ATTR, install_transformer_rules
from lrp_llm.archs.description import MoEParts, TransformerParts
from lrp_llm.archs.mla import _MLA_ATTENTION
from lrp_llm.archs.moe import _GATED, _RMS, _attention_per_block, _blocks
from lrp_llm.mechanism.patch import ModelPatch

# the implementations whose attention function ignores ``indices`` (the module masks for them)
_MASKED_IMPLEMENTATIONS = (None, "eager", "sdpa")


def index_mask(indices: torch.Tensor, attention_mask: torch.Tensor, n_keys: int) -> torch.Tensor:
    """``attention_mask`` with every key outside ``indices`` masked, as the DSA attention masks it.

    indices: ``[batch, queries, topk]`` key positions kept per query; attention_mask:
    ``[batch, 1, queries, n_keys]``, boolean (True: attend) or additive (0 / the dtype's minimum).
    Returns a mask of the same shape and dtype.
    """
    batch, queries, _ = indices.shape
    dropped = indices.new_ones((batch, queries, n_keys), dtype=torch.bool).scatter(-1, indices.long(), False)
    dropped = dropped.unsqueeze(1)
    if attention_mask.dtype == torch.bool:
        return attention_mask & ~dropped
    return attention_mask.masked_fill(dropped, torch.finfo(attention_mask.dtype).min)


def _masking(original: Callable) -> Callable:
    """``original`` (an eager or SDPA attention function) with the DSA ``indices`` applied as a mask first."""

    def attention(module: nn.Module, query, key, value, attention_mask, *args, indices=None, **kwargs):
        if indices is not None:
            attention_mask = index_mask(indices, attention_mask, key.shape[2])
        return original(module, query, key, value, attention_mask, *args, **kwargs)

    return attention


def install_dsa_rules(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The shared MLA/MoE rules, with each attention's top-k selection kept as the mask it is without them."""
    attentions = [m for m in model.modules() if hasattr(m, "indexer") and hasattr(m, "kv_a_proj_with_mqa")]
    # read before the shared installer gives each attention a config naming the rules' function
    names = {id(attn): getattr(attn.config, "_attn_implementation", None) for attn in attentions}
    install_transformer_rules(patch, model, DSA_PARTS, rules)
    for attn in attentions:
        if names[id(attn)] in _MASKED_IMPLEMENTATIONS:
            original, *factors = getattr(attn, _RULES_ATTR)
            patch.replace_attribute(attn, _RULES_ATTR, (_masking(original), *factors))


DSA_PARTS = TransformerParts(
    attention=_MLA_ATTENTION, mlps=(_GATED,), norm=_RMS, expected=_attention_per_block, moe=MoEParts()
)

DSA_FAMILY = register(
    ArchSpec(
        family="dsa",
        model_types=("deepseek_v32", "glm_moe_dsa"),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=DSA_PARTS,
        install=install_dsa_rules,
        # the layer stepper is not claimed: each indexer keeps its own key cache (``update_indexer``),
        # which the stepper's cache stand-ins do not record; sweeps use the batched engine
        blocks=_blocks("mlp", steps=False),
    )
)
