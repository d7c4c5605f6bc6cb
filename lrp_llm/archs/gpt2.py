"""GPT-2: LayerNorm with bias, a fused Q/K/V projection (``c_attn``, a Conv1D), a plain GELU MLP.

Q, K and V come out of one projection, so their rules are applied where they enter
transformers' attention function (:class:`AttentionFunctionParts`); SDPA stays. Conv1D is
a linear map (nothing needed), the LayerNorms get the detached 1/sigma and the MLP's
activation the identity rule, all from the shared installers of :mod:`lrp_llm.archs.blocks`.

With ``reorder_and_upcast_attn`` and the eager implementation, GPT-2 computes attention in
its own upcast path; under the rules it goes through the eager function instead, which
is the same arithmetic in the model's dtype (identical in float32).

The learned position embedding (``wpe``) is added to every token embedding like a bias: it
absorbs relevance the token embeddings do not get (conservation is exact without it).

The layer stepper is not offered: GPT-2's model passes each block its cache and mask as
positional arguments, which the stepper does not replace (the sweep uses the batched engine).

GPTBigCode (StarCoder 1, SantaCoder) has the same layout and names; its ``c_attn`` is a Linear
that gives multi-query attention (one key/value head shared by every query head) or full
heads. Q, K and V get their rules where they enter the attention function whatever the split,
and the broadcast of the single key/value head to every query head is linear. Its blocks take
their cache as ``layer_past`` (no layer stepper either).
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    AttentionFunctionParts,
    BlockPaths,
    MLPParts,
    NormParts,
    TransformerParts,
    per_block,
)

GPT2_FAMILY = register(
    ArchSpec(
        family="gpt2",
        model_types=("gpt2", "gpt_bigcode", "gpt-sw3"),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionFunctionParts(projection="c_attn"),
            mlps=(MLPParts(up="c_fc", act="act", down="c_proj"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=per_block(),
        ),
        blocks=BlockPaths(
            layers="h",
            attention="attn",
            heads="attn.c_proj",
            mlp="mlp",
            neurons="mlp.c_proj",
            final_norm="ln_f",
        ),
    )
)
