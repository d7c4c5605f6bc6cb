"""Llama-family decoders: Llama (SmolLM2), Mistral, Qwen2, Qwen3, Gemma 1-3 (text), OLMo-2, Granite.

They share one shape: RMSNorm, attention with ``q_proj``/``k_proj``/``v_proj``/``o_proj``
(RoPE and any q/k norm between the projections and the attention kernel are linear
once norms are detached), and a gated MLP ``down(act(gate(x)) * up(x))``. The rules are
the shared ones of :mod:`lrp_llm.archs.blocks` (AttnLRP, CP-LRP, RelP) and AttnLRP's attention
variants (:mod:`lrp_llm.archs.attention_variants`); nothing here is new beyond the names.

Gemma-2's final-logit soft-cap (``cap * tanh(x / cap)`` after the LM head, cap 30) gets the
identity rule (:func:`lrp_llm.archs.blocks.install_logit_softcap`). Its attention logit
soft-cap (cap 50) sits inside the eager attention function and keeps its plain gradient:
under CP-LRP and RelP the attention probabilities are constants, so it does not matter;
under AttnLRP it is part of the softmax's plain gradient (close to the identity below the cap).

Gemma-3's multimodal checkpoints (4B, 12B, 27B: ``gemma3``) wrap the same text model beside a
vision tower; text prompts run only the text model, so the rules go on its parts
(``TransformerParts.within``) and the blocks are its layers.
"""

from __future__ import annotations

from dataclasses import replace

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.attention_variants import VARIANT_RULE_SETS
from lrp_llm.archs.description import (
    DECODER_BLOCKS,
    AttentionParts,
    GatedMLPParts,
    NormParts,
    TransformerParts,
    per_block,
)

LLAMA_PARTS = TransformerParts(
    attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
    mlps=(GatedMLPParts(gate="gate_proj", up="up_proj", down="down_proj", act="act_fn"),),
    norm=NormParts(kind="rms", class_suffix="RMSNorm"),
    expected=per_block(norms=None),
    logit_softcap="final_logit_softcapping",
)

LLAMA_FAMILY = register(
    ArchSpec(
        family="llama",
        model_types=(
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "gemma",
            "gemma2",
            "gemma3_text",
            "olmo2",
            "granite",
            # the same layout under other names (q/k norms, sliding windows, sub-norms and
            # NoPE layers change nothing the rules see)
            "bitnet",
            "cwm",
            "diffllama",
            "ernie4_5",
            "exaone4",
            "flint",
            "granite_swa",
            "helium",
            "hunyuan_v1_dense",
            "hyperclovax",
            "internlm3",
            "iquestcoder",
            "ministral",
            "ministral3",
            "olmo3",
            "seed_oss",
            "smollm3",
            "vaultgemma",
        ),
        kind="causal-lm",
        patching_rules=("relp",),
        rule_variants=VARIANT_RULE_SETS,
        parts=LLAMA_PARTS,
        blocks=DECODER_BLOCKS,
    )
)

GEMMA3_MULTIMODAL = register(
    ArchSpec(
        family="gemma3",
        model_types=("gemma3",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=replace(LLAMA_PARTS, within="language_model"),
        blocks=replace(DECODER_BLOCKS, layers="language_model.layers", final_norm="language_model.norm"),
    )
)
