"""BART-style encoder-decoders (BART, mBART, Marian, Pegasus, PLBART, Blenderbot, Blenderbot-Small),
and the same model types built as the decoder alone (``BartForCausalLM`` and its siblings).

A block is LayerNorm with bias (after each sublayer in BART, PLBART, Marian and
Blenderbot-Small; before it, with one final norm per stack, in mBART, Pegasus and
Blenderbot), attention with ``q_proj``/``k_proj``/``v_proj``/``out_proj`` (self-attention in
both stacks; cross-attention in the decoder, its Q from the decoder, K and V from the encoder
output, so the same factors apply) and a plain MLP ``fc2(activation_fn(fc1(x)))`` written
inline in the block (the block itself carries ``fc1``/``activation_fn``/``fc2``). Every part
gets the shared rule of :mod:`lrp_llm.archs.blocks`: 1/sigma of each LayerNorm detached, Q
and K x 1/4 and V x 1/2 (AttnLRP) or Q and K detached (CP-LRP, RelP), the activation the
identity rule.

Position embeddings (learned, or Marian's and Pegasus's fixed sinusoids) are added to every
token embedding like a bias, and the biases and ``final_logits_bias`` are biases: they
absorb part of the relevance; without them CP-LRP conserves exactly. ``scale_embedding``
multiplies the token embeddings by a constant, which does not change gradient x input
relevance (the seq2seq engine hands each stack the embeddings its own ``input_ids`` path
would compute).

Built as the decoder alone (``*ForCausalLM``, ``config.is_encoder_decoder`` false) the
cross-attention modules exist but are never called; the rules on them are inert. That is
the spec registered for the model types (the causal-LM conformance suite covers it); the
encoder-decoder spec is attached as :attr:`ArchSpec.encoder_decoder`.

The layer stepper is not offered: the decoder passes each block its mask and the encoder
output positionally (sweeps use the batched engine).

TrOCR (``trocr``) is the post-norm decoder alone; it has no encoder-decoder of its own type.
BigBird-Pegasus and Whisper are not registered: their decoders fit, but their encoder-decoders
(block-sparse attention, an audio encoder) carry the same model type and have no rules here.
MVP is not registered: its decoder scales ``inputs_embeds`` differently from ``input_ids``
(``scale_embedding``) and its optional prompts add key/value prefixes.
"""

from __future__ import annotations

from dataclasses import replace

from lrp_llm.archs import ArchSpec, refuse, register
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts

# the parts every layout shares; only the norm positions and the final norms differ
_ATTENTION = AttentionParts(q="q_proj", k="k_proj", v="v_proj")
_MLP = MLPParts(up="fc1", act="activation_fn", down="fc2")
_NORM = NormParts(kind="layer", class_suffix="LayerNorm")

POST_NORM_TYPES = ("bart", "plbart", "marian", "blenderbot-small")
PRE_NORM_TYPES = ("mbart", "pegasus", "blenderbot")


def _decoder_alone(config) -> dict[str, int]:
    # each decoder block has a self- and a cross-attention module (the latter unused) and one MLP
    return {"attention": 2 * config.decoder_layers, "mlp": config.decoder_layers}


def _encoder_decoder(config) -> dict[str, int]:
    # encoder: self-attention + MLP per block; decoder: self- + cross-attention + MLP
    n_enc, n_dec = config.encoder_layers, config.decoder_layers
    return {"attention": n_enc + 2 * n_dec, "mlp": n_enc + n_dec}


def _parts(expected) -> TransformerParts:
    return TransformerParts(attention=_ATTENTION, mlps=(_MLP,), norm=_NORM, expected=expected)


def _register(family: str, model_types: tuple[str, ...], final_norm: str | None) -> ArchSpec:
    encoder_decoder = ArchSpec(
        family=family,
        model_types=model_types,
        kind="seq2seq",
        parts=_parts(_encoder_decoder),
    )
    return register(
        ArchSpec(
            family=family,
            model_types=model_types,
            kind="causal-lm",
            patching_rules=("relp",),
            parts=_parts(_decoder_alone),
            # from the decoder wrapper (``model.model``); the MLP's output is fc2's, its neurons fc2's input
            blocks=BlockPaths(
                layers="decoder.layers",
                attention="self_attn",
                heads="self_attn.out_proj",
                mlp="fc2",
                neurons="fc2",
                final_norm=final_norm,
            ),
            encoder_decoder=encoder_decoder,
        )
    )


# LayerNorm after each sublayer, no final norm (the last block's ends the stack)
BART_FAMILY = _register("bart", POST_NORM_TYPES, final_norm=None)
# TrOCR's text decoder: BART's post-norm block; transformers has no encoder-decoder of this type
# (the image encoder is a separate model inside VisionEncoderDecoderModel)
TROCR_FAMILY = register(replace(BART_FAMILY, model_types=("trocr",), encoder_decoder=None))
# LayerNorm before each sublayer, one final norm per stack
MBART_FAMILY = _register("mbart", PRE_NORM_TYPES, final_norm="decoder.layer_norm")

refuse(("mvp",), "MvpDecoder applies scale_embedding to input_ids but not to the inputs_embeds the explainers pass")
refuse(("bigbird_pegasus",), "the encoder's block-sparse attention (BigBirdBlockSparseAttention) has no LRP rule")
refuse(
    ("whisper",),
    "the audio encoder (conv1, conv2 over input_features) takes no tokens; its decoder is not explained alone",
)
