"""DBRX: fused Q/K/V projection (``Wqkv``) clipped element-wise, LayerNorms without bias, and routed
experts in DBRX's own layout (``DbrxExperts``: every expert's GLU weights stacked in three 2-D tensors).

The parts and their rules:

- ``clamp(Wqkv(x), -c, c)`` (``clip_qkv``): an element-wise activation, so the identity rule (relevance
  of the clipped value passes to the unclipped one: gradient ``clamp(x) / x``), applied on ``Wqkv``'s
  output; the module's own clamp then leaves the clipped values (and, its bounds inclusive, their gradient)
  unchanged. Q, K and V get the shared attention rules where they enter the attention function.
- the LayerNorms (no bias): the shared norm rule (``1 / sigma`` held), its value taken from torch's kernel
  (:func:`kernel_valued`: the rule's own arithmetic rounds differently in float32).
- the router: softmax over the experts, top-k (piecewise constant), the selected scores divided by their
  p-norm (``moe_normalize_expert_weights``); scores x expert outputs get the experts' rule
  (:mod:`lrp_llm.archs.experts`: uniform under AttnLRP, scores held under CP-LRP and RelP).
- each expert ``(act(x W1_e^T) * x V1_e^T) W2_e``: the gated MLP's product rule
  (:func:`lrp_llm.archs.experts.gated_product`), by a forward of the experts module with that arithmetic.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import GATE_RULE, install_transformer_rules
from lrp_llm.archs.description import AttentionFunctionParts, BlockPaths, NormParts, TransformerParts
from lrp_llm.archs.experts import ROUTER_RULE, gated_product
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch, output_tensor
from lrp_llm.mechanism.primitives import identity_rule, scale_grad


def clip_identity(clip: float):
    """Forward hook on a projection whose output the module clamps to [-clip, clip]: the clamp, by the identity rule."""

    def hook(_module, _args, output):
        out = output_tensor(output)
        return identity_rule(out, out.clamp(min=-clip, max=clip))

    return hook


def kernel_valued(module: nn.Module):
    """The make-function wrapping a norm's rule forward so that its value is the module's own kernel's (its
    gradient still the rule's): the rule's float32 LayerNorm rounds differently from torch's kernel, and DBRX's
    residual stream (large against the logits) carries that ~1e-7 relative difference to the logits."""

    def make(rule_forward):
        def forward(hidden_states, *args, **kwargs):
            ruled = rule_forward(hidden_states, *args, **kwargs)
            with torch.no_grad():
                plain = type(module).forward(module, hidden_states, *args, **kwargs)
            return ruled + (plain - ruled).detach()

        return forward

    return make


def is_dbrx_experts(module: nn.Module) -> bool:
    mlp = getattr(module, "mlp", None)
    return all(isinstance(getattr(mlp, w, None), torch.Tensor) for w in ("w1", "v1", "w2")) and all(
        isinstance(getattr(module, a, None), int) for a in ("num_experts", "ffn_hidden_size", "hidden_size")
    )


def experts_forward(experts: nn.Module, rules: str):
    """The make-function for the experts module's forward with ``rules``: ``hidden_states`` (batch, pos, hidden),
    ``top_k_index`` and ``top_k_weights`` (tokens, k) -> (batch, pos, hidden), the same as the module's own."""
    gate_rule, router_rule = GATE_RULE[rules], ROUTER_RULE[rules]
    mlp = experts.mlp
    shape = (experts.num_experts, experts.ffn_hidden_size, experts.hidden_size)

    def make(_original):
        def forward(hidden_states, top_k_index, top_k_weights):
            batch = hidden_states.shape[0]
            x = hidden_states.reshape(-1, experts.hidden_size)
            weights = top_k_weights if router_rule == "uniform" else top_k_weights.detach()
            w1, v1, w2 = mlp.w1.view(shape), mlp.v1.view(shape), mlp.w2.view(shape)
            out = torch.zeros_like(x)
            for expert in torch.unique(top_k_index).tolist():
                token, slot = torch.where(top_k_index == expert)
                xe = x[token]
                h = gated_product(mlp.activation_fn, xe @ w1[expert].T, xe @ v1[expert].T, gate_rule) @ w2[expert]
                out.index_add_(0, token, h * weights[token, slot, None])
            # the uniform rule on sum_k w_k * E_k: half of the gradient to each factor
            out = scale_grad(out, 0.5) if router_rule == "uniform" else out
            return out.view(batch, -1, experts.hidden_size)

        return forward

    return make


def _expected(config: Any) -> dict[str, int]:
    n = config.num_hidden_layers
    return {"attention": n, "norm": 2 * n + 1}


PARTS = TransformerParts(
    attention=AttentionFunctionParts(projection="Wqkv"),
    mlps=(),
    norm=NormParts(kind="layer", class_suffix="LayerNorm"),
    expected=_expected,
)


def install(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The shared rules (attention, norms), the identity rule on the Q/K/V clip, the experts' rules."""
    from lrp_llm.archs.blocks import find_parts

    found = [m for m in model.modules() if is_dbrx_experts(m)]
    if len(found) != model.config.num_hidden_layers:
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {model.config.num_hidden_layers} DBRX experts modules, found "
            f"{len(found)}; this checkpoint's layout is not supported"
        )
    install_transformer_rules(patch, model, PARTS, rules)
    parts = find_parts(model, PARTS)
    for norm in parts["norms"]:
        patch.override_forward(norm, kernel_valued(norm))
    for attn in parts["attentions"]:
        if attn.clip_qkv is not None:
            patch.hook_output(attn.Wqkv, clip_identity(float(attn.clip_qkv)))
    for experts in found:
        patch.override_forward(experts, experts_forward(experts, rules))


DBRX_FAMILY = register(
    ArchSpec(
        family="dbrx",
        model_types=("dbrx",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=PARTS,
        install=install,
        blocks=BlockPaths(
            layers="blocks",
            attention="norm_attn_norm.attn",
            heads="norm_attn_norm.attn.out_proj",
            mlp="ffn",
            final_norm="norm_f",
            steps_from_keys_values=False,
        ),
    )
)
