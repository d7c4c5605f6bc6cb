"""More mixture-of-experts decoders on the MoE family's rules (:mod:`lrp_llm.archs.moe`): Mellum, MiMo-V2-Flash,
LFM2-MoE, Cohere-2-MoE.

Mellum: Llama-layout attention with per-head q/k RMS norms (1/rms held constant like every
norm) and routed experts in every block. Cohere-2-MoE: Cohere's parallel block (attention and
MLP on one norm's output, summed: linear), dense prefix MLPs, routed experts with an optional
ungated shared MLP (a sum or an average with the routed output: linear), and a constant
``logit_scale``. Its norms are mean-centred LayerNorms without bias, or RMSNorms where the
config sets ``rms_norm_eps`` (transformers picks the class from the config): the installer
picks the norm rule the same way, so neither kind is left without its 1/sigma detached.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from lrp_llm.archs import register
from lrp_llm.archs.blocks import install_transformer_rules
from lrp_llm.archs.description import MoEParts, NormParts
from lrp_llm.archs.lfm2 import LFM2_FAMILY
from lrp_llm.archs.moe import _moe_family
from lrp_llm.mechanism.patch import ModelPatch

MELLUM_FAMILY = _moe_family("mellum", ("mellum",))
# MiMo-V2-Flash: sliding-window layers with attention sinks (a learned logit per head: a constant column of the
# softmax, as in gpt-oss) and twice the key/value heads, a constant value scale, sigmoid-scored routed experts
# its value heads are wider than the query/key heads the site map reads from the config: no head sites
_MIMO = _moe_family("mimo_v2_flash", ("mimo_v2_flash",))
MIMO_V2_FLASH_FAMILY = register(replace(_MIMO, blocks=replace(_MIMO.blocks, heads=None)))


# LFM2-MoE: LFM2's blocks (attention or a short gated convolution, :mod:`lrp_llm.archs.lfm2`) with routed
# experts in place of the gated MLP after the first ``num_dense_layers`` blocks
def _lfm2_moe_counts(config: Any) -> dict[str, int]:
    n = config.num_hidden_layers
    attention = sum(t != "conv" for t in config.layer_types)
    return {"attention": attention, "mixer": n - attention, "mlp": min(config.num_dense_layers, n)}


LFM2_MOE_FAMILY = register(
    replace(
        LFM2_FAMILY,
        family="lfm2_moe",
        model_types=("lfm2_moe",),
        parts=replace(LFM2_FAMILY.parts, expected=_lfm2_moe_counts, moe=MoEParts()),
        # the routed experts have no single neuron axis; they are expert sites (no shared expert; the dense first
        # blocks have none)
        blocks=replace(LFM2_FAMILY.blocks, neurons=None, experts="feed_forward.experts"),
    )
)

_LAYER_NORM = NormParts(kind="layer", class_suffix="LayerNorm")
_RMS_NORM = NormParts(kind="rms", class_suffix="RMSNorm")


def _install_cohere2_moe(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    rms = getattr(model.config.get_text_config(), "rms_norm_eps", None) is not None
    parts = replace(COHERE2_MOE_FAMILY.parts, norm=_RMS_NORM if rms else _LAYER_NORM)
    install_transformer_rules(patch, model, parts, rules)


# the installer reads the norm kind from the config; the spec keeps the default's parts for the other readers
COHERE2_MOE_FAMILY = register(
    replace(_moe_family("cohere2_moe", ("cohere2_moe",), norm=_LAYER_NORM), install=_install_cohere2_moe)
)
