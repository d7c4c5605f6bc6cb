"""Decoders whose attention output is gated, ``o_proj(o * act(gate(x)))``: Laguna, AFMoE, Beam.

Llama-layout attention (q/k/v projections, q/k RMS norms: 1/rms held constant, a linear map
under the rules) with an output gate (:class:`AttentionOutputGateParts`, rules in
:mod:`lrp_llm.archs.attention_gate`), and mixture-of-experts MLPs with dense layers (rules in
:mod:`lrp_llm.archs.experts`). Laguna gates with a softplus, one gate per head or per
channel (``config.gating``); AFMoE with a sigmoid per channel (its full-attention layers
scale the query by a position-dependent constant: linear); Beam with a sigmoid per channel
plus a learned per-head bias, and caps its logits (``final_logit_softcapping``: the identity rule on the tanh).
"""

from __future__ import annotations

from lrp_llm.archs.description import AttentionOutputGateParts
from lrp_llm.archs.moe import _moe_family

LAGUNA_FAMILY = _moe_family(
    "laguna",
    ("laguna",),
    attention_gate=AttentionOutputGateParts(gate="g_proj", output="o_proj", act="softplus", groups="width"),
)
AFMOE_FAMILY = _moe_family(
    "afmoe", ("afmoe",), attention_gate=AttentionOutputGateParts(gate="gate_proj", output="o_proj", act="sigmoid")
)
BEAM_FAMILY = _moe_family(
    "beam",
    ("beam",),
    attention_gate=AttentionOutputGateParts(gate="gate_proj", output="o_proj", act="sigmoid", bias="gate_bias"),
    logit_softcap="final_logit_softcapping",
    # its NoPE layers scale the query by a temperature computed from all positions' ids in the model's
    # forward, which the layer stepper (blocks run on a suffix of positions) does not pass on
    steps=False,
)
