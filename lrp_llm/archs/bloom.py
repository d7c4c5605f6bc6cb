"""BLOOM: LayerNorm with bias (also on the word embeddings), a fused ``query_key_value`` laid out
per head as ``(head, [q, k, v], head_dim)``, ALiBi, a plain MLP with BloomGelu.

BLOOM's attention computes the scores itself (``alibi.baddbmm(q, k^T)``), so the rules on Q,
K and V are applied where its ``_reshape`` returns them from the fused output
(:class:`AttentionSplitParts`); the ALiBi bias added to the scores is a constant. The
activation (a tanh-approximated GELU in its own autograd function) gets the identity rule
on its module's output, like any element-wise activation.

Attention and MLP add the residual inside their modules, so the patching sites are the
outputs of their last projections (``self_attention.dense``, ``mlp.dense_4h_to_h``). The
layer stepper is not offered: the blocks take their cache as ``layer_past``.
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    AttentionSplitParts,
    BlockPaths,
    MLPParts,
    NormParts,
    TransformerParts,
    per_block,
)

BLOOM_FAMILY = register(
    ArchSpec(
        family="bloom",
        model_types=("bloom",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionSplitParts(projection="query_key_value", split="_reshape"),
            mlps=(MLPParts(up="dense_h_to_4h", act="gelu_impl", down="dense_4h_to_h"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=per_block(final_norms=2),  # the final LayerNorm and the word embeddings'
        ),
        blocks=BlockPaths(
            layers="h",
            attention="self_attention.dense",  # the module's own output already includes the residual
            heads="self_attention.dense",
            mlp="mlp.dense_4h_to_h",
            neurons="mlp.dense_4h_to_h",
            final_norm="ln_f",
        ),
    )
)
