"""LFM2 (Liquid): blocks whose token mixer is either attention or a short gated convolution,
each followed by a gated MLP; RMSNorm throughout (q/k norms in attention).

The attention layers take the shared Q/K/V rules. The convolution ``out_proj(C * conv(B * x))``
(:class:`GatedConvParts`) is, with its input-dependent gates ``B`` and ``C`` held constant, a
linear map of ``x``: CP-LRP holds them (exact conservation); AttnLRP and RelP give each product
the uniform rule. No published LRP rule covers this mixer; these follow MambaLRP's recipe
(hold the input-dependent gates, uniform rule on products) and are checked by conservation.
The MLP calls SiLU as a function, so it gets a forward with the same arithmetic and the rules
(:class:`InlineGatedMLPParts`).
"""

from __future__ import annotations

from typing import Any

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    AttentionParts,
    BlockPaths,
    GatedConvParts,
    InlineGatedMLPParts,
    NormParts,
    TransformerParts,
    by_layer_type,
)


def _expected(config: Any) -> dict[str, int]:
    n = config.num_hidden_layers
    attention = sum(t != "conv" for t in config.layer_types)
    # per block: the mixer's and the MLP's norms, q/k norms in attention blocks; one norm on the embeddings
    return {"attention": attention, "mixer": n - attention, "mlp": n, "norm": 2 * n + 2 * attention + 1}


LFM2_FAMILY = register(
    ArchSpec(
        family="lfm2",
        model_types=("lfm2",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
            mlps=(InlineGatedMLPParts(gate="w1", up="w3", down="w2"),),
            norm=NormParts(kind="rms", class_suffix="RMSNorm"),
            expected=_expected,
            mixers=(GatedConvParts(in_proj="in_proj", conv="conv", out_proj="out_proj"),),
        ),
        # a block mixes tokens by attention or by the gated convolution (a "mixer" site), then its MLP
        blocks=BlockPaths(
            layers="layers",
            attention="self_attn",
            heads="self_attn.out_proj",
            mlp="feed_forward",
            neurons="feed_forward.w2",
            mixer="conv",
            final_norm="embedding_norm",
            layer_parts=by_layer_type(
                {
                    "conv": ("mixer", "mlp", "neurons"),
                    "full_attention": ("attention", "heads", "mlp", "neurons"),
                    "sliding_attention": ("attention", "heads", "mlp", "neurons"),
                }
            ),
        ),
    )
)
