"""StarCoder2: LayerNorm with bias, separate Q/K/V/O projections with bias, a plain MLP ``c_proj(act(c_fc(x)))``.

Llama's attention layout (RoPE between the projections and the attention kernel is linear)
with GPT-2's norms and MLP: the shared installers of :mod:`lrp_llm.archs.blocks` cover every
part (Q, K, V output hooks; LayerNorm 1/sigma detached; the identity rule on ``act``).
"""

from __future__ import annotations

from dataclasses import replace

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    DECODER_BLOCKS,
    AttentionParts,
    MLPParts,
    NormParts,
    TransformerParts,
    per_block,
)

STARCODER2_FAMILY = register(
    ArchSpec(
        family="starcoder2",
        model_types=("starcoder2",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
            mlps=(MLPParts(up="c_fc", act="act", down="c_proj"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=per_block(),
        ),
        blocks=replace(DECODER_BLOCKS, neurons="mlp.c_proj"),
    )
)
