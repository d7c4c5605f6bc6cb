"""The newest causal-LM types of transformers 5.23 that are not explained, each with the part that stops it.

Each was read in its transformers modeling file; the reason names the module (or the wiring) that
has no LRP rule here, so that the one-line error (:func:`lrp_llm.archs.get_arch`) tells the user
what is missing. Where the decoder inside a multimodal wrapper is a supported layout, the reason
says that the wrapper is what is not described, not that a rule is missing.
"""

from __future__ import annotations

from lrp_llm.archs import refuse

# -- Gemma-3n / Gemma-4 -------------------------------------------------------------------------
_ALTUP = (
    "AltUp's predict/correct mixing of its parallel hidden-state copies (Gemma3nTextAltUp, coefficients "
    "computed from the input) has no LRP rule here"
)
refuse(("gemma3n_text",), _ALTUP)
refuse(("gemma3n",), f"its text model's {_ALTUP}; its vision (timm) and audio towers are not described either")
# With inputs_embeds (how every explainer feeds a prompt) the per-layer embeddings are looked up
# from token ids recovered under torch.no_grad(): relevance through that path would be dropped.
_PER_LAYER = (
    "its per-layer input embeddings (Gemma4TextModel.get_per_layer_inputs: token ids recovered from "
    "inputs_embeds under no_grad, gated into every layer by per_layer_input_gate) have no LRP rule here"
)
refuse(("gemma4_text",), _PER_LAYER)
refuse(("gemma4",), f"{_PER_LAYER}; its vision and audio towers are not described either")
# its text model (gemma4_unified_text) is supported: lrp_llm.archs.gemma4_unified
refuse(
    ("gemma4_unified",),
    "the multimodal wrapper (Gemma4UnifiedModel: vision embedder beside the text model) is not described "
    "here; load its text model as gemma4_unified_text",
)
refuse(
    ("gemma4_assistant", "gemma4_unified_assistant"),
    "a drafter for assisted decoding: its forward needs the target model's hidden states and shared_kv_states "
    "(pre_projection of 2 x backbone width), so there is no prompt-only forward to explain",
)

# -- sparse / hyper-connected DeepSeek relatives -------------------------------------------------
refuse(
    ("deepseek_v4",),
    "its hyper-connections (DeepseekV4HyperConnection: residual streams mixed by input-dependent "
    "Sinkhorn weights) and compressed KV (DeepseekV4HCACompressor) have no LRP rule here",
)
refuse(
    ("hy_v4",),
    "its hyper-connections (HYV4HyperConnection: residual streams mixed by input-dependent weights) "
    "have no LRP rule here",
)
refuse(
    ("dots3_note_text",),
    "its per-layer configs (config.per_layer_config: attention and MLP settings per layer type, DSA and "
    "sliding-window layers) are not described here",
)
refuse(
    ("dots3_note",),
    "its text model's per-layer configs (config.per_layer_config) are not described here; its vision "
    "mixture of experts (Dots3NoteVisionMoE) and audio tower are not described either",
)

# -- Inkling -------------------------------------------------------------------------------------
refuse(
    ("inkling_text",),
    "its hidden-state-dependent relative-position attention logits (InklingRelativeLogits, from r_proj, "
    "added to the scores) have no LRP rule here",
)
refuse(
    ("inkling2_text",),
    "its block attention residuals (Inkling2BlockAttentionResidual: a softmax attention over earlier "
    "blocks' outputs that forms each layer's input) have no LRP rule here",
)

# -- looped / byte-level / multimodal / audio ----------------------------------------------------
refuse(
    ("hrm_text",),
    "its hierarchical recurrence (HrmTextModel's H/L cycles) runs all but the last L_bp_cycles iterations "
    "under torch.no_grad(), so relevance through them cannot be propagated",
)
refuse(
    ("blt",),
    "its entropy-based byte patching (BltPatcher) and the byte/patch cross-attention of its local "
    "encoder and decoder (BltCrossAttention) have no LRP rule here",
)
refuse(
    ("emu3",),
    "the wrapper (Emu3ForConditionalGeneration: VQ-VAE image tokenizer Emu3VQVAE beside the text model) is not "
    "described here; its text model alone (Emu3ForCausalLM) reports model_type 'emu3_text', which transformers' "
    "auto classes do not register",
)
# fuyu (the Persimmon decoder behind an image-patch projection) is supported: lrp_llm.archs.fuyu
# got_ocr2 and moss_transcribe_diarize (Llama-layout decoders in a wrapper) are supported: lrp_llm.archs.wrapped_llama
refuse(
    ("phi4_multimodal",),
    "its vision and audio encoders sit inside the decoder model (Phi4MultimodalModel.embed_tokens_extend), "
    "beside its layers; that layout is not described here",
)
refuse(
    ("musicgen", "musicgen_melody"),
    "its input is num_codebooks parallel audio-code streams summed per position (embed_tokens per codebook) "
    "and its logits come from one head per codebook (lm_heads); no text prompt to explain",
)
