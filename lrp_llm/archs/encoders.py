"""AttnLRP and CP-LRP for the sentence encoders beyond the BERT layout: MPNet, DistilBERT, DeBERTa-v2, ModernBERT.

Each is a declarative :class:`TransformerParts` entry; one installer
(:func:`install_encoder_rules`) gives every part its rule in *detach form*, so that BiLRP's
forward mode (``torch.func.jvp``) and reverse mode compute the same rule-modified Jacobian
(as :mod:`lrp_llm.archs.bert` does for the BERT layout). What is new per family:

==========  =========================================  ==============================================
family      part                                       rule
==========  =========================================  ==============================================
mpnet       relative position bias on the scores       a constant added to the scores: nothing
distilbert  ``q_lin``/``k_lin``/``v_lin``, ffn          the shared Q/K/V factors; identity rule on GELU
deberta-v2  disentangled attention: content-to-        Q, K x 1/4 in ``Q K^T`` (two products); in the
            position ``Q P_k^T`` and position-to-       position terms Q (resp. K) is the only input-
            content ``K P_q^T`` terms of the scores     dependent factor: x 1/2 (:func:`_disentangled`)
modernbert  fused ``Wqkv`` (RoPE, local/global          Q, K, V factors at the attention function;
            windows), GeGLU ``Wo(act(a) * g)`` with     uniform rule on the product (fused halves of
            ``a, g = Wi(x).chunk(2)``, bias-free        ``Wi``), gate detached under CP-LRP; LayerNorm
            LayerNorm                                   1/std detached
==========  =========================================  ==============================================

Under CP-LRP every attention score is a constant (Q and K detached, and DeBERTa's position
terms are built from Q, K and constant relative embeddings only), so a bias-free encoder's
relevance sums exactly to the embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import (
    ATTENTION_RULE,
    GATE_RULE,
    check_counts,
    find_parts,
    install_attention,
    install_norms,
    mlp_modules,
)
from lrp_llm.archs.description import (
    AttentionFunctionParts,
    AttentionParts,
    BlockPaths,
    FusedGatedMLPParts,
    MLPParts,
    NormParts,
    TransformerParts,
    per_block,
)
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch, output_tensor
from lrp_llm.mechanism.primitives import identity_jacobian, scale_grad, scaled_jacobian

LAYER_NORM = NormParts(kind="layer", class_suffix="LayerNorm")


# ------------------------------------------------------------------- detach-form MLP rules
def _identity_hook(factor: float):
    """Forward hook on an activation module: the identity rule (times ``factor``), valid in both AD modes."""

    def hook(_module, args, output):
        return scaled_jacobian(identity_jacobian(args[0], output_tensor(output)), factor)

    return hook


def _detach_hook(_module, _args, output):
    return output_tensor(output).detach()


def _second_half_hook(factor: float):
    """Forward hook on a fused ``(gate, up)`` projection: the second half's Jacobian times ``factor``."""

    def hook(_module, _args, output):
        gate, up = output_tensor(output).chunk(2, dim=-1)
        return torch.cat((gate, scaled_jacobian(up, factor)), dim=-1)

    return hook


def install_encoder_mlps(patch: ModelPatch, model: nn.Module, parts: TransformerParts, rules: str) -> None:
    """Plain MLPs: the identity rule on the activation. Fused gated MLPs: the uniform rule on
    ``act(gate) * up`` (x 1/2 each, identity rule on ``act``), or the gate constant under CP-LRP."""
    for names in parts.mlps:
        for mlp in mlp_modules(model, names):
            act = getattr(mlp, names.act)
            if not isinstance(names, FusedGatedMLPParts):
                patch.hook_output(act, _identity_hook(1.0))
            elif GATE_RULE[rules] == "uniform":
                patch.hook_output(act, _identity_hook(0.5))
                patch.hook_output(getattr(mlp, names.gate_up), _second_half_hook(0.5))
            else:
                patch.hook_output(act, _detach_hook)


def install_encoder_rules(patch: ModelPatch, model: nn.Module, parts: TransformerParts, rules: str) -> None:
    """The rule set ``rules`` ("attnlrp", "cp-lrp") in detach form on every part ``parts`` names."""
    found = find_parts(model, parts)
    check_counts(model, parts, found)
    install_norms(patch, found["norms"], parts.norm, forward_mode=True)
    install_attention(patch, found["attentions"], parts.attention, rules, forward_mode=True)
    install_encoder_mlps(patch, model, parts, rules)


def _installer(parts: TransformerParts):
    def install(patch: ModelPatch, model: nn.Module, rules: str) -> None:
        install_encoder_rules(patch, model, parts, rules)

    return install


# ------------------------------------------------------------------- MPNet
# MPNet's relative position bias is computed from positions only and added to the scores.
MPNET_PARTS = TransformerParts(
    attention=AttentionParts(q="q", k="k", v="v"),
    mlps=(MLPParts(up="dense", act="intermediate_act_fn"),),  # the down projection is in the sibling ``output``
    norm=LAYER_NORM,
    expected=per_block(norms=2, final_norms=1),  # two per block and the embedding LayerNorm
)

MPNET_FAMILY = register(
    ArchSpec(
        family="mpnet",
        model_types=("mpnet",),
        kind="encoder",
        default_method="cp-lrp",
        parts=MPNET_PARTS,
        install=_installer(MPNET_PARTS),
        blocks=BlockPaths(layers="encoder.layer"),
    )
)


# ------------------------------------------------------------------- DistilBERT
DISTILBERT_PARTS = TransformerParts(
    attention=AttentionParts(q="q_lin", k="k_lin", v="v_lin"),
    mlps=(MLPParts(up="lin1", down="lin2", act="activation"),),
    norm=LAYER_NORM,
    expected=per_block(norms=2, final_norms=1),
)

DISTILBERT_FAMILY = register(
    ArchSpec(
        family="distilbert",
        model_types=("distilbert",),
        kind="encoder",
        default_method="cp-lrp",
        parts=DISTILBERT_PARTS,
        install=_installer(DISTILBERT_PARTS),
        blocks=BlockPaths(layers="transformer.layer"),
    )
)


# ------------------------------------------------------------------- DeBERTa-v2
DEBERTA_V2_PARTS = TransformerParts(
    attention=AttentionParts(q="query_proj", k="key_proj", v="value_proj"),
    mlps=(MLPParts(up="dense", act="intermediate_act_fn"),),
    norm=LAYER_NORM,
    expected=per_block(norms=None),  # the relative embeddings' LayerNorm is optional (norm_rel_ebd)
)
# the method of DeBERTa's attention that builds the content-to-position and position-to-content scores
DISENTANGLED = "disentangled_attention_bias"


def _disentangled(original, forward_mode: bool):
    """``disentangled_attention_bias`` with Q's and K's Jacobians times 2 (AttnLRP).

    Q and K reach it already scaled by 1/4 (their hooks: half for ``A V``, half for the
    product ``Q K^T``). In ``Q P_k^T`` and ``K P_q^T`` the relative-position factor is a
    constant (projected relative embeddings), so Q and K are the only input-dependent
    factor there: they keep the whole score relevance, times 1/2 for ``A V`` only.
    """
    scale = scaled_jacobian if forward_mode else scale_grad

    def bias(query_layer, key_layer, *args, **kwargs):
        return original(scale(query_layer, 2.0), scale(key_layer, 2.0), *args, **kwargs)

    return bias


def install_deberta_v2(patch: ModelPatch, model: nn.Module, rules: str, *, forward_mode: bool = True) -> None:
    """The shared rules plus the disentangled terms' factors (:func:`_disentangled`); convolution layers refused."""
    base = getattr(model, "base_model", model)
    if getattr(getattr(base, "encoder", None), "conv", None) is not None:
        raise UnsupportedModelError(
            f"{type(model).__name__}: DeBERTa-v2's ConvLayer (conv_kernel_size > 0: tanh of a convolution added "
            "to the first layer's output) has no LRP rule here; use a checkpoint without it (DeBERTa-v3)"
        )
    found = find_parts(model, DEBERTA_V2_PARTS)
    check_counts(model, DEBERTA_V2_PARTS, found)
    install_norms(patch, found["norms"], DEBERTA_V2_PARTS.norm, forward_mode=forward_mode)
    install_attention(patch, found["attentions"], DEBERTA_V2_PARTS.attention, rules, forward_mode=forward_mode)
    install_encoder_mlps(patch, model, DEBERTA_V2_PARTS, rules)
    if ATTENTION_RULE[rules] != "uniform":
        return  # Q and K detached: every score term is a constant
    for attn in found["attentions"]:
        if DISENTANGLED in attn.__dict__:
            raise RuntimeError(f"{type(attn).__name__}: LRP rules are already installed on this attention module")
        object.__setattr__(attn, DISENTANGLED, _disentangled(getattr(attn, DISENTANGLED), forward_mode))
        patch.on_exit(lambda attn=attn: object.__delattr__(attn, DISENTANGLED))


DEBERTA_V2_FAMILY = register(
    ArchSpec(
        family="deberta-v2",
        model_types=("deberta-v2",),
        kind="encoder",
        default_method="cp-lrp",
        parts=DEBERTA_V2_PARTS,
        install=install_deberta_v2,
        blocks=BlockPaths(layers="encoder.layer"),
    )
)


# ------------------------------------------------------------------- ModernBERT
# Layer 0's attention norm is an Identity; local (sliding-window) layers differ from global
# ones only by their mask, a constant.
MODERNBERT_PARTS = TransformerParts(
    attention=AttentionFunctionParts(projection="Wqkv"),
    mlps=(FusedGatedMLPParts(gate_up="Wi", down="Wo", act="act"),),
    norm=LAYER_NORM,
    expected=per_block(norms=None),
)

MODERNBERT_FAMILY = register(
    ArchSpec(
        family="modernbert",
        model_types=("modernbert",),
        kind="encoder",
        default_method="cp-lrp",
        parts=MODERNBERT_PARTS,
        install=_installer(MODERNBERT_PARTS),
        blocks=BlockPaths(layers="layers"),
    )
)
