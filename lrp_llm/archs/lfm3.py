"""LFM3 (Liquid): LFM2's blocks (attention or a short gated convolution, then a gated MLP) with sandwich
norms (an RMSNorm after the mixer and after the MLP too) and a per-head sigmoid output gate on attention.

Nothing here needs a new rule: the gated convolution and the inline-SiLU MLP take LFM2's rules
(:mod:`lrp_llm.archs.lfm2`), the extra RMSNorms take the norm rule (1/rms held), Q/K/V get the shared
attention rules where they enter transformers' attention function (their q/k norms per head sit before
it, linear with 1/rms held), and ``o_proj(attn * sigmoid(g_proj(x)))`` takes the attention output gate's
rule (:mod:`lrp_llm.archs.attention_gate`: the gated MLP's rules on ``o * sigmoid(x)``, the gate held
under CP-LRP), the same gate as Bailing's: one logit per head from ``g_proj``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.attention_gate import install_attention_gates
from lrp_llm.archs.blocks import find_parts, install_transformer_rules
from lrp_llm.archs.description import (
    AttentionFunctionParts,
    AttentionOutputGateParts,
    BlockPaths,
    GatedConvParts,
    InlineGatedMLPParts,
    NormParts,
    TransformerParts,
    by_layer_type,
)
from lrp_llm.mechanism.patch import ModelPatch


def _expected(config: Any) -> dict[str, int]:
    n = config.num_hidden_layers
    attention = sum(t != "conv" for t in config.layer_types)
    # per block: before and after the mixer and the MLP (sandwich), q/k norms in attention blocks; the final norm
    norms = (4 if config.use_sandwich_norm else 2) * n + 2 * attention + 1
    return {"attention": attention, "mixer": n - attention, "mlp": n, "norm": norms}


PARTS = TransformerParts(
    attention=AttentionFunctionParts(projection="q_proj"),
    mlps=(InlineGatedMLPParts(gate="w1", up="w3", down="w2"),),
    norm=NormParts(kind="rms", class_suffix="RMSNorm"),
    expected=_expected,
    mixers=(GatedConvParts(in_proj="in_proj", conv="conv", out_proj="out_proj"),),
)


# the output gate, where the config gives attention one (not every LFM3 checkpoint does)
GATE = AttentionOutputGateParts(gate="g_proj", output="o_proj", act="sigmoid", groups="head")


def install(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The shared rules and, where the config has them, the attention output gates."""
    install_transformer_rules(patch, model, PARTS, rules)
    gated = [a for a in find_parts(model, PARTS)["attentions"] if getattr(a, GATE.gate, None) is not None]
    install_attention_gates(patch, gated, GATE, rules)


_PARTS_BY_TYPE = {
    "conv": ("mixer", "mlp", "neurons"),
    "full_attention": ("attention", "heads", "mlp", "neurons"),
    "sliding_attention": ("attention", "heads", "mlp", "neurons"),
}

LFM3_FAMILY = register(
    ArchSpec(
        family="lfm3",
        model_types=("lfm3",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=PARTS,
        install=install,
        blocks=BlockPaths(
            layers="layers",
            attention="self_attn",
            heads="self_attn.o_proj",
            mlp="feed_forward",
            neurons="feed_forward.w2",
            mixer="conv",
            final_norm="embedding_norm",
            layer_parts=by_layer_type(_PARTS_BY_TYPE),
        ),
    )
)
