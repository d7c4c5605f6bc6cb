"""Moshi's text model (``MoshiForCausalLM``): Llama's q/k/v attention (projections wrapped in ``MoshiLinear``),
RMSNorm, and a gated MLP whose gate and up projections are one (``fc1``, viewed as (2, d_mlp),
gate first): :class:`FusedGatedMLPParts`, like Phi-3.
"""

from __future__ import annotations

from dataclasses import replace

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    DECODER_BLOCKS,
    AttentionParts,
    FusedGatedMLPParts,
    NormParts,
    TransformerParts,
    per_block,
)

MOSHI_FAMILY = register(
    ArchSpec(
        family="moshi",
        model_types=("moshi",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
            mlps=(FusedGatedMLPParts(gate_up="fc1", down="fc2", act="activation_fn"),),
            norm=NormParts(kind="rms", class_suffix="RMSNorm"),
            expected=per_block(),
        ),
        blocks=replace(DECODER_BLOCKS, neurons="mlp.fc2"),
    )
)
