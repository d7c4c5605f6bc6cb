"""BioGPT: OPT's block layout (LayerNorm with bias, separate Q/K/V projections, a plain MLP
``fc2(activation_fn(fc1(x)))`` in the decoder layer itself) at the top level of the model.

BioGPT's attention calls transformers' attention function on the outputs of separate
modules, so output hooks carry the Q/K/V rules. The learned position embedding is added to
every token like a bias (conservation is exact without it).

XGLM has the same layout (:mod:`lrp_llm.archs.xglm`).
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts, per_block

BIOGPT_FAMILY = register(
    ArchSpec(
        family="biogpt",
        model_types=("biogpt",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
            mlps=(MLPParts(up="fc1", act="activation_fn", down="fc2"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=per_block(),
        ),
        blocks=BlockPaths(
            layers="layers",
            attention="self_attn",
            heads="self_attn.out_proj",
            mlp="fc2",  # the MLP has no module of its own: its output is fc2's
            neurons="fc2",
            final_norm="layer_norm",
            steps_from_keys_values=True,
        ),
    )
)
