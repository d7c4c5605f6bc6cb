"""Cohere (Command-R) and Cohere-2: Llama's q/k/v attention and gated MLP, a mean-centred LayerNorm without bias
(``CohereLayerNorm``), attention and MLP in parallel on one norm's output.

The norm is a LayerNorm (``weight`` only, ``variance_epsilon``): its ``1 / sigma`` is detached
like every LayerNorm's (:mod:`lrp_llm.archs.layer_norm`); with ``use_qk_norm`` the same norm
sits on Q and K per head (after the output hooks, detached under CP-LRP anyway). The parallel
block is a sum and the final ``logit_scale`` a constant factor: both linear, nothing needed.
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    DECODER_BLOCKS,
    AttentionParts,
    GatedMLPParts,
    NormParts,
    TransformerParts,
)


def _expected(config) -> dict[str, int]:
    n = config.num_hidden_layers
    # one norm per block (parallel block) and the final one; with use_qk_norm, one each on Q and K
    qk = 2 * n if getattr(config, "use_qk_norm", False) else 0
    return {"attention": n, "mlp": n, "norm": n + 1 + qk}


COHERE_FAMILY = register(
    ArchSpec(
        family="cohere",
        model_types=("cohere", "cohere2"),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
            mlps=(GatedMLPParts(gate="gate_proj", up="up_proj", down="down_proj", act="act_fn"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=_expected,
        ),
        blocks=DECODER_BLOCKS,
    )
)
