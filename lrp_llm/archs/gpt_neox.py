"""GPT-NeoX (Pythia): LayerNorm with bias, a fused Q/K/V projection (``query_key_value``),
partial RoPE, a plain GELU MLP, and attention and MLP in parallel (``use_parallel_residual``).

Q, K and V come out of one projection, so their rules are applied where they enter
transformers' attention function (:class:`AttentionFunctionParts`), after RoPE (linear);
SDPA stays. The parallel block is a sum of the two branches and the residual, linear, so
it needs nothing once each part has its rule.

The layer stepper is not offered: NeoX's blocks take their cache as ``layer_past``, not
through ``past_key_values`` (the sweep uses the batched engine).
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    AttentionFunctionParts,
    BlockPaths,
    MLPParts,
    NormParts,
    TransformerParts,
    per_block,
)

GPT_NEOX_FAMILY = register(
    ArchSpec(
        family="gpt_neox",
        model_types=("gpt_neox",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionFunctionParts(projection="query_key_value"),
            mlps=(MLPParts(up="dense_h_to_4h", act="act", down="dense_4h_to_h"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=per_block(),
        ),
        blocks=BlockPaths(
            layers="layers",
            attention="attention",
            heads="attention.dense",
            mlp="mlp",
            neurons="mlp.dense_4h_to_h",
            final_norm="final_layer_norm",
        ),
    )
)
