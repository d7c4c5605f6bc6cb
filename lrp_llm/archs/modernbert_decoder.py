"""ModernBERT-decoder: ``nn.LayerNorm`` (bias optional; one on the embeddings, none before the first
block's attention), q/k/v attention with RoPE (global and sliding-window layers), a GLU MLP
``Wo(act(a) * g)`` with ``a, g = Wi(x).chunk(2)``, and a prediction head ``norm(act(dense(h)))``
before the vocabulary projection.

The MLP is a fused gated MLP with the activated half first (:class:`FusedGatedMLPParts`, like
Phi-3); the head's activation gets the identity rule (a plain MLP without a down projection
of its own: the vocabulary projection follows). The layer stepper is not offered: its readout
(final norm, then the output embedding) would skip the prediction head.
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    AttentionParts,
    BlockPaths,
    FusedGatedMLPParts,
    MLPParts,
    NormParts,
    TransformerParts,
)


def _expected(config) -> dict[str, int]:
    n = config.num_hidden_layers
    # the blocks' MLPs and the prediction head; norms: embeddings, attention (not in block 0), MLP, final, head
    return {"attention": n, "mlp": n + 1, "norm": 1 + (n - 1) + n + 1 + 1}


MODERNBERT_DECODER_FAMILY = register(
    ArchSpec(
        family="modernbert_decoder",
        model_types=("modernbert-decoder",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
            mlps=(
                FusedGatedMLPParts(gate_up="Wi", down="Wo", act="act"),
                MLPParts(up="dense", act="act", down=None),
            ),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=_expected,
        ),
        blocks=BlockPaths(
            layers="layers",
            attention="attn",
            heads="attn.Wo",
            mlp="mlp",
            neurons="mlp.Wo",
            final_norm="final_norm",
        ),
    )
)
