"""GPTBigCode (StarCoder 1, SantaCoder): GPT-2's layout with a fused ``c_attn`` (a Linear) that
gives multi-query attention (one key/value head shared by every query head) or full heads.

Its attention calls transformers' attention function, so Q, K and V get their rules there
(:class:`AttentionFunctionParts`) whatever the split of ``c_attn``; the broadcast of the
single key/value head to every query head is linear. The learned position embedding is
added to every token like a bias (conservation is exact without it).

The layer stepper is not offered: the blocks take their cache as ``layer_past``.
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

GPT_BIGCODE_FAMILY = register(
    ArchSpec(
        family="gpt_bigcode",
        model_types=("gpt_bigcode",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionFunctionParts(projection="c_attn"),
            mlps=(MLPParts(up="c_fc", act="act", down="c_proj"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=per_block(),
        ),
        blocks=BlockPaths(
            layers="h",
            attention="attn",
            heads="attn.c_proj",
            mlp="mlp",
            neurons="mlp.c_proj",
            final_norm="ln_f",
        ),
    )
)
