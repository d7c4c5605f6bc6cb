"""MiniMax-M3 (text model ``minimax_m3_vl_text``; the multimodal wrapper ``minimax_m3_vl``): Llama-layout
attention with per-head q/k norms (``(1 + w)`` RMSNorms), sparse layers whose lightning indexer picks the
key blocks each query attends to, and clamped-SwiGLU MLPs: dense layers, a shared expert and routed experts.

The parts and their rules:

- the indexer's choice of key blocks is a top-k selection: piecewise constant, it enters the attention as
  a mask (a constant under every rule set); the indexer's own projections only score blocks, so no
  relevance flows through them (it has ``q_proj``/``k_proj`` but no ``v_proj``: not taken for attention).
- the clamped SwiGLU ``down((clamp(u, -L, L) + 1) * swish_alpha(min(g, L)))`` with ``[g | u]`` the two
  halves of ``gate_up_proj``'s output: gpt-oss's rule (:func:`lrp_llm.archs.experts.clamped_swiglu`:
  identity rule on the gate's activation; the product uniform under AttnLRP and RelP, the ``u' + 1`` side
  held under CP-LRP), here on the halves rather than interleaved. The dense MLPs and the shared expert
  (``MiniMaxM3VLDenseMLP``) get a forward with that arithmetic; the routed experts get experts.py's.
- the router's sigmoid scores, renormalised over the selection, times the experts' outputs: the experts'
  rule (uniform under AttnLRP, scores held under CP-LRP and RelP); ``routed_scaling_factor`` is a constant.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import GATE_RULE, install_transformer_rules
from lrp_llm.archs.description import AttentionParts, BlockPaths, MoEParts, NormParts, TransformerParts
from lrp_llm.archs.experts import clamped_swiglu
from lrp_llm.mechanism.patch import ModelPatch


def is_clamped_swiglu_mlp(module: nn.Module) -> bool:
    """An MLP ``down_proj(clamped_swiglu(gate_up_proj(x)))`` with ``[g | u]`` halves (MiniMax-M3's dense MLP)."""
    return (
        isinstance(getattr(module, "gate_up_proj", None), nn.Linear)
        and isinstance(getattr(module, "down_proj", None), nn.Linear)
        and isinstance(getattr(module, "swiglu_limit", None), int | float)
        and isinstance(getattr(module, "swiglu_alpha", None), int | float)
    )


def clamped_swiglu_mlp_forward(mlp: nn.Module, rules: str):
    """The make-function for :meth:`ModelPatch.override_forward`: (..., hidden) -> (..., hidden), the module's
    arithmetic with the clamped SwiGLU's rule."""
    gate_rule = GATE_RULE[rules]

    def make(_original):
        def forward(hidden_states):
            h = clamped_swiglu(mlp.gate_up_proj(hidden_states), mlp.swiglu_limit, mlp.swiglu_alpha, gate_rule, True)
            return mlp.down_proj(h)

        return forward

    return make


def _expected(config: Any) -> dict[str, int]:
    # the MLPs are found by their own layout (not counted by the shared finder): attention per layer
    return {"attention": config.num_hidden_layers}


PARTS = TransformerParts(
    attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
    mlps=(),
    norm=NormParts(kind="rms", class_suffix="RMSNorm"),
    expected=_expected,
    moe=MoEParts(),
)


def install(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The shared rules (attention, norms, routed experts) and the clamped-SwiGLU rule on every dense MLP."""
    install_transformer_rules(patch, model, PARTS, rules)
    for module in model.modules():
        if is_clamped_swiglu_mlp(module):
            patch.override_forward(module, clamped_swiglu_mlp_forward(module, rules))


MINIMAX_M3_FAMILY = register(
    ArchSpec(
        family="minimax_m3",
        model_types=("minimax_m3_vl_text",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=PARTS,
        install=install,
        blocks=BlockPaths(
            layers="layers",
            attention="self_attn",
            heads="self_attn.o_proj",
            mlp="mlp",
            # the routed experts (their sum scaled by the block's routed_scaling_factor: linear, after the taps, so a
            # tap's gradient carries it) and the ungated shared experts; the dense blocks have none
            experts="mlp.experts",
            shared_expert="mlp.shared_experts",
            final_norm="norm",
            steps_from_keys_values=False,
        ),
    )
)
