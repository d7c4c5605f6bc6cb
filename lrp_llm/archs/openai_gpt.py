"""OpenAI GPT (GPT-1): post-LayerNorm blocks (LayerNorm with bias after each residual sum, no final
norm), a fused ``c_attn`` (Conv1D) split inline, a plain MLP, learned positions.

The attention splits ``c_attn``'s output inline and calls ``_attn(query, key, value, ...)``, so
the rules on Q, K and V are applied where they enter that method (:class:`AttentionCallParts`).
The activation modules come from a module-level table that every OpenAI GPT model shares;
the identity rule changes only their gradient, never their output, so a second model
running while the rules are installed computes the same values. The learned position
embedding is added to every token like a bias (conservation is exact without it).

The layer stepper is not offered: the blocks take no cache.
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionCallParts, BlockPaths, MLPParts, NormParts, TransformerParts, per_block

OPENAI_GPT_FAMILY = register(
    ArchSpec(
        family="openai-gpt",
        model_types=("openai-gpt",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionCallParts(projection="c_attn", method="_attn"),
            mlps=(MLPParts(up="c_fc", act="act", down="c_proj"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=per_block(final_norms=0),
        ),
        blocks=BlockPaths(
            layers="h",
            attention="attn",
            heads="attn.c_proj",
            mlp="mlp",
            neurons="mlp.c_proj",
        ),
    )
)
