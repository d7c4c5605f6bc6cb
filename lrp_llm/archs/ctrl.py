"""CTRL: pre-LayerNorm blocks (LayerNorm with bias), separate ``Wq``/``Wk``/``Wv`` projections whose
outputs enter transformers' attention function, and a plain ReLU MLP ``ffn = Sequential(Linear, ReLU,
Linear)``; a fixed sinusoidal position encoding is added to the scaled token embeddings.

Every part gets the shared rules of :mod:`lrp_llm.archs.blocks` (Q, K x 1/4 and V x 1/2 under AttnLRP,
Q and K detached under CP-LRP and RelP; 1/sigma detached; the identity rule on the ReLU). The
sinusoidal encoding is a constant added to every token like a bias: it absorbs relevance (conservation
is exact without it).

``CTRLModel.forward`` multiplies ``inputs_embeds`` by ``sqrt(d_model)`` *in place*: on the leaf
tensor the explainers pass (requires grad) that raises, and on a caller's tensor it would change the
caller's data. For the block the base model gets a forward that hands it a copy (``clone`` is
differentiable, so the gradient reaches the caller's tensor; the scale is linear, so gradient x
input relevance is the same).
"""

from __future__ import annotations

from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import install_transformer_rules
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts, per_block
from lrp_llm.mechanism.patch import ModelPatch

CTRL_PARTS = TransformerParts(
    attention=AttentionParts(q="Wq", k="Wk", v="Wv"),
    mlps=(MLPParts(up="0", act="1", down="2"),),  # the positions inside ``ffn`` (a Sequential)
    norm=NormParts(kind="layer", class_suffix="LayerNorm"),
    expected=per_block(),
)


def copy_inputs_embeds(patch: ModelPatch, model: nn.Module) -> None:
    """The base model's forward gets a copy of ``inputs_embeds`` (it scales them in place)."""

    def make(original):
        def forward(*args, **kwargs):
            embeds = kwargs.get("inputs_embeds")
            if embeds is not None:
                kwargs["inputs_embeds"] = embeds.clone()
            return original(*args, **kwargs)

        return forward

    patch.override_forward(model.base_model, make)


def install_ctrl(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The shared rules on CTRL's parts, and the copy of ``inputs_embeds``."""
    copy_inputs_embeds(patch, model)
    install_transformer_rules(patch, model, CTRL_PARTS, rules)


CTRL_FAMILY = register(
    ArchSpec(
        family="ctrl",
        model_types=("ctrl",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=CTRL_PARTS,
        install=install_ctrl,
        plain=copy_inputs_embeds,
        blocks=BlockPaths(
            layers="h",
            attention="multi_head_attention",
            heads="multi_head_attention.dense",
            mlp="ffn",
            neurons="ffn.2",
            final_norm="layernorm",
        ),
    )
)
