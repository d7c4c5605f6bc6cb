"""CodeGen: GPT-J's parallel block (one LayerNorm with bias, attention and MLP side by side) with a
fused ``qkv_proj`` laid out for four model-parallel shards as ``(shard, [q, v, k])``, partial rotary.

CodeGen splits ``qkv_proj``'s output inline and calls ``_attn(query, key, value, mask)``, so the
rules on Q, K and V are applied where they enter that method (:class:`AttentionCallParts`),
after the shard layout, rotary and the cache, which are all linear: the odd layout needs
nothing. The parallel block is a sum, linear.

The layer stepper is not offered: the blocks take their cache as ``layer_past``.
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionCallParts, BlockPaths, MLPParts, NormParts, TransformerParts, per_block

CODEGEN_FAMILY = register(
    ArchSpec(
        family="codegen",
        model_types=("codegen",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionCallParts(projection="qkv_proj", method="_attn"),
            mlps=(MLPParts(up="fc_in", act="act", down="fc_out"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=per_block(norms=1),
        ),
        blocks=BlockPaths(
            layers="h",
            attention="attn",
            heads="attn.out_proj",
            mlp="mlp",
            neurons="mlp.fc_out",
            final_norm="ln_f",
        ),
    )
)
