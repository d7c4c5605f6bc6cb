"""GLM and GLM-4: Llama's q/k/v attention (partial, interleaved RoPE: linear), RMSNorm, and a gated MLP whose
gate and up projections are one (``gate_up_proj``, gate first, like Phi-3).

The MLP gets :class:`FusedGatedMLPParts`' rules (``act(gate)`` identity rule x 1/2, the up
half's gradient x 1/2 under AttnLRP and RelP, the gate detached under CP-LRP). GLM-4 adds a
norm after the attention and after the MLP (four per block); norms are not counted.
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    DECODER_BLOCKS,
    AttentionParts,
    FusedGatedMLPParts,
    NormParts,
    TransformerParts,
    per_block,
)

GLM_FAMILY = register(
    ArchSpec(
        family="glm",
        model_types=("glm", "glm4"),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
            mlps=(FusedGatedMLPParts(gate_up="gate_up_proj", down="down_proj", act="activation_fn"),),
            norm=NormParts(kind="rms", class_suffix="RMSNorm"),
            expected=per_block(norms=None),
        ),
        blocks=DECODER_BLOCKS,
    )
)
