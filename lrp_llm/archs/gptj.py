"""GPT-J: LayerNorm with bias, separate Q/K/V projections (``out_proj`` after the heads), a plain
MLP ``fc_out(act(fc_in(x)))``, and attention and MLP in parallel on one LayerNorm's output.

GPT-J computes attention in its own method, not through transformers' attention function;
Q, K and V are the outputs of separate modules, so output hooks carry their rules (its
rotary embedding comes after them and is linear). The parallel block is a sum of the two
branches and the residual, linear, so it needs nothing once each part has its rule.

The layer stepper is not offered: GPT-J's blocks take their cache as ``layer_past``, not
through ``past_key_values`` (the sweep uses the batched engine).
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts, per_block

GPTJ_FAMILY = register(
    ArchSpec(
        family="gptj",
        model_types=("gptj",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
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
