"""Older causal LMs and BERT-style decoders that are refused, each with the part that has no rule here.

Each reason is what :func:`lrp_llm.archs.get_arch` puts in its one-line error, so it names the
module (or the missing input path) a user would have to look at.
"""

from __future__ import annotations

from lrp_llm.archs import refuse

# BERT-style decoders (``is_decoder=True``): transformers builds them as causal LMs, but their blocks,
# LM-head transform and the part named below have no causal-LM rules written here
# (BERT, RoBERTa, ... are explained as encoders: BiLRP).
_BERT_STYLE = {
    "bert-generation": "BertGenerationDecoder's post-norm BERT blocks and LM head have no causal-LM rules here",
    "big_bird": "BigBirdBlockSparseAttention (block-sparse attention with random blocks) has no LRP rule here",
    "megatron-bert": "MegatronBertLayer's pre-LayerNorm BERT blocks have no causal-LM rules here",
    "rembert": "RemBertForCausalLM's decoupled input/output embeddings and post-norm blocks have no causal-LM rules here",
    "roberta-prelayernorm": "RobertaPreLayerNormLayer's pre-LayerNorm blocks have no causal-LM rules here",
    "roc_bert": "RoCBertEmbeddings' pronunciation and shape embeddings (computed from input_ids) have no rule here",
    "roformer": "RoFormerSelfAttention's sinusoidal rotary q/k in post-norm blocks has no causal-LM rules here",
    "xlm-roberta-xl": "XLMRobertaXLLayer's pre-LayerNorm blocks have no causal-LM rules here",
    "xmod": "XmodLayer's per-language adapter MLPs (XmodAdapter) have no LRP rule here",
}
for _model_type, _reason in _BERT_STYLE.items():
    refuse((_model_type,), _reason)

refuse(
    ("xlm",),
    "XLM's MultiHeadAttention attends both ways unless config.causal and its language embeddings have no rule here",
)
refuse(
    ("cpmant",),
    "CpmAntModel.forward takes no inputs_embeds (it builds prompt and segment embeddings from input_ids); "
    "the explainers pass embeddings",
)
refuse(
    ("xglm",),
    "XGLMAttention clamps its scores with torch.full(finfo(dtype).min) in float32, which overflows in float64, "
    "so its rules cannot be checked for conservation",
)
refuse(
    ("reformer",), "its LSH / local chunked attention (LSHSelfAttention) and reversible layers have no LRP rule here"
)
refuse(("xlnet",), "XLNetRelativeAttention's two-stream relative attention (content and query streams) has no LRP rule")
refuse(("prophetnet",), "ProphetNetNgramSelfAttention's n-gram predicting streams have no LRP rule here")
refuse(
    ("git",),
    "GitForCausalLM's image tokens (GitProjection) and its post-norm BERT-style text layers have no LRP rules here",
)
