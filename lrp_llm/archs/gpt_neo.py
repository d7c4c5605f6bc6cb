"""GPT-Neo: GPT-2's block layout with separate Q/K/V projections (no bias) and layers alternating
between global and local (windowed) causal attention.

The attention is computed inline on the outputs of ``q_proj``, ``k_proj`` and ``v_proj``, so
output hooks carry their rules; the local window is part of the mask, a constant. The learned
position embedding is added to every token like a bias (conservation is exact without it).

The layer stepper is not offered: the blocks take their cache as ``layer_past``.
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts, per_block

GPT_NEO_FAMILY = register(
    ArchSpec(
        family="gpt_neo",
        model_types=("gpt_neo",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
            mlps=(MLPParts(up="c_fc", act="act", down="c_proj"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=per_block(),
        ),
        blocks=BlockPaths(
            layers="h",
            attention="attn",
            heads="attn.attention.out_proj",
            mlp="mlp",
            neurons="mlp.c_proj",
            final_norm="ln_f",
        ),
    )
)
