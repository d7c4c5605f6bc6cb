"""Older causal LMs and BERT-style decoders that are refused, each with the part that has no rule here.

Each reason is what :func:`lrp_llm.archs.get_arch` puts in its one-line error, so it names the
module (or the missing input path) a user would have to look at.
"""

from __future__ import annotations

from lrp_llm.archs import refuse

# BERT-style decoders (``is_decoder=True``) whose named part keeps them out of lrp_llm.archs.bert_decoders
_BERT_STYLE = {
    "big_bird": "BigBirdBlockSparseAttention (block-sparse attention with random blocks) has no LRP rule here",
    "roc_bert": "RoCBertEmbeddings add pronunciation and shape embeddings from their own id inputs, which the "
    "explainers (inputs_embeds only) cannot pass",
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
    ("reformer",), "its LSH / local chunked attention (LSHSelfAttention) and reversible layers have no LRP rule here"
)
refuse(("xlnet",), "XLNetRelativeAttention's two-stream relative attention (content and query streams) has no LRP rule")
refuse(("prophetnet",), "ProphetNetNgramSelfAttention's n-gram predicting streams have no LRP rule here")
