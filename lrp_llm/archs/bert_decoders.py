"""BERT-style decoders built as causal LMs (``is_decoder=True``): BertGeneration, Megatron-BERT, RemBERT,
RoBERTa-PreLayerNorm, RoFormer, XLM-RoBERTa-XL, X-MOD, and GIT's text decoder (text prompts).

The blocks are BERT's: ``attention.self.{query,key,value}`` (causal under ``is_decoder``), an MLP
``output.dense(act(intermediate.dense(x)))`` and LayerNorms with bias, after each residual sum (post-norm:
BertGeneration, RemBERT, RoFormer) or before each sublayer with a final norm (pre-norm: Megatron-BERT,
RoBERTa-PreLayerNorm, XLM-RoBERTa-XL). The LM head is ``decoder(LayerNorm(act(dense(h))))`` (BertGeneration:
``decoder(h)``). Every part gets the shared rules of :mod:`lrp_llm.archs.blocks`: 1/sigma detached, Q and K
x 1/4 and V x 1/2 (AttnLRP) or Q and K detached (CP-LRP, RelP), the identity rule on each activation, the
LM head's included. RoFormer rotates Q and K (and V with ``rotary_value``) by fixed sinusoids after the
projections: linear for fixed positions, so the factors on the projections' outputs carry through
unchanged. Position and token-type embeddings are added to every token like biases (conservation is exact
without them). RemBERT's ``embedding_hidden_mapping_in`` is a linear map.

The LayerNorms' values are the module's own (torch's fused kernel) and only their gradient is the rule's
(:func:`_layer_norm_exact_value`): the rule's formula rounds differently in float32 (1e-6), and the tiny
pre-norm RoBERTa-PreLayerNorm amplified that to 2.6e-4 in its logits (2e-13 in float64).

The RoBERTa-style LM heads call ``gelu`` as a function, not a module, so for the block ``lm_head`` gets a
forward with the same arithmetic and the identity rule on that GELU (:func:`_roberta_lm_head`).

BERT, RoBERTa and the other encoder types (``lrp_llm.archs.bert``) are explained as encoders; these types
have no encoder registration and are offered as the causal LMs transformers builds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import check_counts, find_parts, install_attention, install_mlps
from lrp_llm.archs.ctrl import copy_inputs_embeds
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts
from lrp_llm.mechanism.patch import ModelPatch
from lrp_llm.mechanism.primitives import identity_rule, layer_norm_detached

_ATTENTION = AttentionParts(q="query", k="key", v="value")
_BLOCK_MLP = MLPParts(up="dense", act="intermediate_act_fn")  # the down projection is the sibling ``output.dense``
_LAYER_NORM = NormParts(kind="layer", class_suffix="LayerNorm")


def _blocks_and_head(head_mlps: int) -> Callable[[Any], dict[str, int]]:
    """One attention module and one MLP per block, plus ``head_mlps`` activations in the LM head (norms not counted)."""

    def expected(config: Any) -> dict[str, int]:
        n = config.num_hidden_layers
        return {"attention": n, "mlp": n + head_mlps}

    return expected


def _parts(head_act: MLPParts | None) -> TransformerParts:
    return TransformerParts(
        attention=_ATTENTION,
        mlps=(_BLOCK_MLP,) if head_act is None else (_BLOCK_MLP, head_act),
        norm=_LAYER_NORM,
        expected=_blocks_and_head(0 if head_act is None else 1),
    )


def _blocks(final_norm: str | None) -> BlockPaths:
    return BlockPaths(
        layers="encoder.layer",
        attention="attention.output.dense",  # the attention output before its residual sum
        heads="attention.output.dense",
        mlp="output.dense",
        neurons="output.dense",
        final_norm=final_norm,
    )


def _roberta_lm_head(lm_head: nn.Module):
    """``decoder(layer_norm(gelu(dense(x))))`` with the identity rule on the GELU (called as a function)."""

    def make(_original):
        def forward(features, **_kwargs):
            from transformers.activations import gelu

            pre = lm_head.dense(features)
            return lm_head.decoder(lm_head.layer_norm(identity_rule(pre, gelu(pre))))

        return forward

    return make


def _layer_norm_exact_value(norm: nn.LayerNorm):
    """The module's own output in value; the gradient of the LayerNorm with 1/sigma detached (x: (..., d))."""

    def make(original):
        def forward(hidden_states):
            ruled = layer_norm_detached(hidden_states, norm.weight, norm.bias, norm.eps)
            return original(hidden_states).detach() + (ruled - ruled.detach())

        return forward

    return make


def _installer(parts: TransformerParts, *, roberta_head: bool, copy_embeds: bool = False):
    def install(patch: ModelPatch, model: nn.Module, rules: str) -> None:
        if copy_embeds:
            copy_inputs_embeds(patch, model)
        found = find_parts(model, parts)
        check_counts(model, parts, found)
        for norm in found["norms"]:
            patch.override_forward(norm, _layer_norm_exact_value(norm))
        install_attention(patch, found["attentions"], parts.attention, rules)
        install_mlps(patch, model, parts, rules)
        if roberta_head:
            patch.override_forward(model.lm_head, _roberta_lm_head(model.lm_head))

    return install


def _register(
    family: str,
    model_type: str,
    head_act: MLPParts | None,
    final_norm: str | None,
    *,
    roberta_head: bool = False,
    copy_embeds: bool = False,
):
    parts = _parts(head_act)
    return register(
        ArchSpec(
            family=family,
            model_types=(model_type,),
            kind="causal-lm",
            patching_rules=("relp",),
            parts=parts,
            install=_installer(parts, roberta_head=roberta_head, copy_embeds=copy_embeds),
            plain=copy_inputs_embeds if copy_embeds else None,
            blocks=_blocks(final_norm),
        )
    )


_BERT_HEAD = MLPParts(up="dense", act="transform_act_fn")  # cls.predictions.transform

BERT_GENERATION_FAMILY = _register("bert-generation", "bert-generation", None, None)
MEGATRON_BERT_FAMILY = _register("megatron-bert", "megatron-bert", _BERT_HEAD, "encoder.ln")
REMBERT_FAMILY = _register("rembert", "rembert", MLPParts(up="dense", act="activation"), None)
ROFORMER_FAMILY = _register("roformer", "roformer", _BERT_HEAD, None)
ROBERTA_PRELAYERNORM_FAMILY = _register(
    "roberta-prelayernorm", "roberta-prelayernorm", None, "LayerNorm", roberta_head=True
)
# X-MOD: after each block's MLP, one adapter MLP per language ``dense2(act(dense1(x)))`` (the tokens of each
# language through their own, put back by a mask: linear); the language comes from ``lang_ids`` or, as the
# explainers pass none, ``config.default_language`` (transformers asks for ``set_default_language`` without it).
_XMOD_PARTS = TransformerParts(
    attention=_ATTENTION,
    mlps=(_BLOCK_MLP, MLPParts(up="dense1", act="adapter_act_fn", down="dense2")),
    norm=_LAYER_NORM,
    expected=lambda config: {
        "attention": config.num_hidden_layers,
        "mlp": config.num_hidden_layers * (1 + len(config.languages)),
    },
)
XMOD_FAMILY = register(
    ArchSpec(
        family="xmod",
        model_types=("xmod",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=_XMOD_PARTS,
        install=_installer(_XMOD_PARTS, roberta_head=True),
        blocks=_blocks(None),
    )
)
# GIT without an image (text prompts): its text decoder is BERT's post-norm blocks under a causal mask, the LM
# head a Linear (``output``); the vision tower and its projection are not run, so the rules on their norms are inert.
# GitEmbeddings adds the position embeddings to ``inputs_embeds`` in place: the base model gets a copy (as CTRL's)
GIT_FAMILY = _register("git", "git", None, None, copy_embeds=True)
XLM_ROBERTA_XL_FAMILY = _register("xlm-roberta-xl", "xlm-roberta-xl", None, "encoder.LayerNorm", roberta_head=True)
