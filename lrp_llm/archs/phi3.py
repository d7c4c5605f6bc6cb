"""Phi-3 (and Phi-3.5, Phi-4 mini): RMSNorm, a fused Q/K/V projection (``qkv_proj``), and a gated MLP
whose gate and up projections are one (``gate_up_proj``, gate first).

Q, K and V get their rules where they enter transformers' attention function
(:class:`AttentionFunctionParts`, after RoPE); the fused gated MLP gets the gated product's
rules with the up half's factor on the second half of ``gate_up_proj``'s output
(:class:`FusedGatedMLPParts`).
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    DECODER_BLOCKS,
    AttentionFunctionParts,
    FusedGatedMLPParts,
    NormParts,
    TransformerParts,
    per_block,
)

PHI3_FAMILY = register(
    ArchSpec(
        family="phi3",
        model_types=("phi3",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionFunctionParts(projection="qkv_proj"),
            mlps=(FusedGatedMLPParts(gate_up="gate_up_proj", down="down_proj", act="activation_fn"),),
            norm=NormParts(kind="rms", class_suffix="RMSNorm"),
            expected=per_block(),
        ),
        blocks=DECODER_BLOCKS,
    )
)
