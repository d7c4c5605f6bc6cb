"""DeepSeek multi-head latent attention (MLA) decoders: DeepSeek-V2/V3, MiniCPM3, GLM-4-MoE-Lite, Youtu, A.X K1.

MLA computes Q from ``q_b_proj(norm(q_a_proj(x)))`` (or ``q_proj(x)`` without a Q rank) and K, V
from ``kv_b_proj(norm(kv_a_proj_with_mqa(x)))`` plus a shared rotary key part, then calls
transformers' attention function. With the norms' 1/sigma detached all of that is linear in
``x``, so Q, K and V get their rules where they enter the attention function
(:class:`AttentionFunctionParts`, found by ``kv_a_proj_with_mqa``) and nothing is MLA-specific.
The MLPs are gated (dense first layers, shared experts) and the routed experts are
transformers 5's fused experts (:mod:`lrp_llm.archs.experts`).
"""

from __future__ import annotations

from lrp_llm.archs.description import AttentionFunctionParts, MoEParts
from lrp_llm.archs.moe import _moe_family

_MLA_ATTENTION = AttentionFunctionParts(projection="kv_a_proj_with_mqa")

MLA_FAMILY = _moe_family(
    "mla", ("deepseek_v3", "glm4_moe_lite", "youtu", "axk1"), attention=_MLA_ATTENTION, moe=MoEParts()
)

# The layer stepper refuses these (it verifies itself against the model's forward): DeepSeek-V2
# passes its rotary embedding as one complex tensor, MiniCPM3's stepped layers differ from its
# forward; sweeps use the batched engine.
MLA_BATCHED_FAMILY = _moe_family(
    "mla", ("deepseek_v2", "minicpm3"), attention=_MLA_ATTENTION, moe=MoEParts(), steps=False
)
