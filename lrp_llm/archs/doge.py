"""Doge (SmallDoge): Llama's q/k/v attention (with Q/K RMSNorms) and gated MLP, plus a dynamic mask: an
additive term of the attention scores computed from the values, ``exp(A * softplus(dt_proj(v)))``
(top-k selected beyond ``keep_window_size`` keys), and learned per-channel residual scales.

The dynamic mask is held constant under every rule set (a hook detaching ``dt_proj``'s
output): under CP-LRP and RelP the attention probabilities are constants, and the mask is part
of them; under AttnLRP it is treated like a bias of the scores, whose share of the softmax's
relevance it absorbs (the exp/softplus chain has no rule). The residual scales are constant
factors (linear). The mixture-of-experts variant (``is_moe``, ``DogeCDMoE``: routed expert
embeddings weighted by a softmax over top-k router scores, sharing the shared expert's
activation module, and routing that mixes positions) is refused with an error naming it.
"""

from __future__ import annotations

from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    DECODER_BLOCKS,
)
from lrp_llm.archs.llama import LLAMA_PARTS
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch

# Llama's parts and names; the dynamic mask is what differs (installed below)
DOGE_PARTS = LLAMA_PARTS


def install_doge(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The shared installers, then the dynamic mask's projection detached in every attention module."""
    from lrp_llm.archs.blocks import detach_output, find_parts, install_transformer_rules

    if getattr(model.config, "is_moe", False):
        raise UnsupportedModelError(
            "doge with is_moe=True: its mixture of experts (DogeCDMoE) has no LRP rule here; "
            "only the dense-MLP Doge checkpoints are supported"
        )
    install_transformer_rules(patch, model, DOGE_PARTS, rules)
    for attn in find_parts(model, DOGE_PARTS)["attentions"]:
        patch.hook_output(attn.dt_proj, detach_output)


DOGE_FAMILY = register(
    ArchSpec(
        family="doge",
        model_types=("doge",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=DOGE_PARTS,
        install=install_doge,
        blocks=DECODER_BLOCKS,
    )
)
