"""XGLM: OPT's block layout (pre-LayerNorm with bias, separate ``q_proj``/``k_proj``/``v_proj``, a plain GELU MLP
``fc2(activation_fn(fc1(x)))`` in the decoder layer) with fixed sinusoidal positions and scaled token embeddings.

Every part gets the shared rules of :mod:`lrp_llm.archs.blocks` (output hooks on Q, K, V; 1/sigma detached; the
identity rule on the activation). The sinusoidal positions are a constant added to every token like a bias
(conservation is exact without them); the embedding scale is inside the embedding module, so the explainers'
``inputs_embeds`` already carry it.

``XGLMAttention.forward`` clamps the masked scores with ``torch.full((), finfo(dtype).min)``, a tensor in the
default dtype (float32): in a float64 model that value overflows and the forward raises. For the block (and for
the plain-gradient methods) each attention module computes the same arithmetic with the clamp in the scores'
own dtype (:func:`_attention_forward`; the key/value cache updated as transformers does); in float32 it is the
same value. Cross-attention (XGLM as the decoder of an encoder-decoder) runs the original forward.
"""

from __future__ import annotations

import torch
from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import install_transformer_rules
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts, per_block
from lrp_llm.mechanism.patch import ModelPatch

XGLM_PARTS = TransformerParts(
    attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
    mlps=(MLPParts(up="fc1", act="activation_fn", down="fc2"),),
    norm=NormParts(kind="layer", class_suffix="LayerNorm"),
    expected=per_block(),
)


def _attention_forward(attn: nn.Module):
    """Self-attention of ``hidden_states`` (batch, pos, d), keys and values appended to the cache if one is given:
    returns (output (batch, pos, d),
    probabilities (batch, heads, pos, pos)); the scores clamped at their own dtype's minimum."""

    def make(original):
        def forward(hidden_states, key_value_states=None, past_key_values=None, attention_mask=None, **kwargs):
            if key_value_states is not None:
                return original(hidden_states, key_value_states, past_key_values, attention_mask, **kwargs)
            bsz, n, _ = hidden_states.shape
            heads, size = attn.num_heads, attn.head_dim

            def split(x: torch.Tensor) -> torch.Tensor:
                return x.view(bsz, n, heads, size).transpose(1, 2)

            q = split(attn.q_proj(hidden_states) * attn.scaling)
            k, v = split(attn.k_proj(hidden_states)), split(attn.v_proj(hidden_states))
            if past_key_values is not None:
                cache = getattr(past_key_values, "self_attention_cache", past_key_values)
                k, v = cache.update(k, v, attn.layer_idx)
            scores = q @ k.transpose(-1, -2)
            if attention_mask is not None:
                scores = torch.clamp_min(scores + attention_mask, torch.finfo(scores.dtype).min)
            if scores.dtype == torch.float16:
                probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(torch.float16)
            else:
                probs = nn.functional.softmax(scores, dim=-1)
            probs_used = nn.functional.dropout(probs, p=attn.dropout, training=attn.training)
            out = (probs_used @ v).transpose(1, 2).reshape(bsz, n, attn.embed_dim)
            return attn.out_proj(out), probs

        return forward

    return make


def install_attention_forwards(patch: ModelPatch, model: nn.Module) -> None:
    """Every attention module gets :func:`_attention_forward` (runs in float64 too)."""
    for attn in model.modules():
        if type(attn).__name__ == "XGLMAttention":
            patch.override_forward(attn, _attention_forward(attn))


def install_xglm(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    install_attention_forwards(patch, model)
    install_transformer_rules(patch, model, XGLM_PARTS, rules)


XGLM_FAMILY = register(
    ArchSpec(
        family="xglm",
        model_types=("xglm",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=XGLM_PARTS,
        install=install_xglm,
        plain=install_attention_forwards,
        blocks=BlockPaths(
            layers="layers",
            attention="self_attn",
            heads="self_attn.out_proj",
            mlp="fc2",  # the MLP has no module of its own: its output is fc2's
            neurons="fc2",
            final_norm="layer_norm",
        ),
    )
)
