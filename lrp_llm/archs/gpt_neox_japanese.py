"""GPT-NeoX-Japanese: LayerNorm with bias, a fused ``query_key_value`` laid out per head as
``(head, [q | k | v])``, partial RoPE, a plain MLP without biases; the last layer's attention
adds a separate bias (``dense_bias``) after its output projection.

The attention splits the fused output inline and calls ``_attn(query, key, value, mask)``, so
the rules on Q, K and V are applied where they enter that method (:class:`AttentionCallParts`),
after RoPE and the cache (linear).

The layer stepper is not offered: the blocks take their cache as ``layer_past``.
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionCallParts, BlockPaths, MLPParts, NormParts, TransformerParts, per_block

GPT_NEOX_JAPANESE_FAMILY = register(
    ArchSpec(
        family="gpt_neox_japanese",
        model_types=("gpt_neox_japanese",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionCallParts(projection="query_key_value", method="_attn"),
            mlps=(MLPParts(up="dense_h_to_4h", act="act", down="dense_4h_to_h"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=per_block(),
        ),
        blocks=BlockPaths(
            layers="layers",
            attention="attention.dense",  # the attention module also returns the last layer's separate bias
            heads="attention.dense",
            mlp="mlp",
            neurons="mlp.dense_4h_to_h",
            final_norm="final_layer_norm",
        ),
    )
)
