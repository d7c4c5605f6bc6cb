"""Rules for an output gate on attention: ``o_proj(o * act(x))`` with ``x = gate(h) [+ per-head bias]``.

``o`` (the attention output) and ``act(x)`` (sigmoid: AFMoE, Beam, Qwen3-Next; softplus:
Laguna) are two input-dependent factors, the same product as a gated MLP's ``act(g) * u``,
and get its rules (:data:`lrp_llm.archs.blocks.GATE_RULE`):

- AttnLRP and RelP, the uniform rule: ``o``'s gradient is halved, and the gate's side passes
  the other half through ``act`` by the identity rule, so ``x * x.grad == 0.5 * p * p.grad``
  element by element (``p = o * act(x)``; summed over head_dim for a per-head gate).
- CP-LRP: the gate is a constant, the block is linear in ``o``: exact conservation.

Where the rule goes: the modules compute ``act`` inline (``torch.sigmoid``, ``F.softplus``),
after the gate projection and, for Beam, after adding a per-head bias, so there is no module
around ``act`` to hook. The gate projection's output hook hands the module a detached copy
(``act`` then carries no gradient) and keeps the live one; the output projection's forward
receives ``p`` and adds ``(x - x.detach()) * 0.5 * p / x``, which is zero in value (the forward
is unchanged) and gives ``x`` the identity rule's gradient ``0.5 * p.grad * o * act(x) / x``.
Reading ``p / x`` instead of the gradient of ``act`` keeps saturated gates (sigmoid'(x) = 0 in
float32 for x > 17) from losing their relevance.
"""

from __future__ import annotations

import torch
from torch import nn

from lrp_llm.archs.blocks import GATE_RULE, detach_output
from lrp_llm.archs.description import AttentionOutputGateParts
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch, output_tensor
from lrp_llm.mechanism.primitives import _safe_ratio, scale_grad

ACTIVATIONS = ("sigmoid", "softplus")


def gate_layout(attn: nn.Module, parts: AttentionOutputGateParts) -> tuple[int, torch.Tensor | None]:
    """``(groups, bias)`` of ``attn``'s gate: ``p`` (…, width) is viewed as (…, groups, width // groups) and the gate's
    input as (…, groups, 1 or width // groups); ``bias`` (groups,) is added to the gate's input, or None.

    A gate whose width neither matches the output projection's input nor divides it is refused (one-line error).
    """
    gate, output = getattr(attn, parts.gate), getattr(attn, parts.output)
    n_gate, n_out = gate.out_features, output.in_features
    bias = getattr(attn, parts.bias, None) if parts.bias is not None else None
    if parts.act not in ACTIVATIONS:
        raise UnsupportedModelError(f"{type(attn).__name__}: its output gate's activation {parts.act!r} has no rule")
    if isinstance(bias, torch.Tensor):
        groups = bias.numel()
    else:
        bias, groups = None, n_gate
    if n_out % groups or n_gate % groups or n_gate not in (groups, n_out):
        raise UnsupportedModelError(
            f"{type(attn).__name__}: its output gate ({n_gate} wide, attention output {n_out}) has no rule here; "
            "this checkpoint's layout is not supported"
        )
    return groups, bias


def gated_output_rule(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``p`` (…, groups, d) unchanged in value; ``p``'s gradient halved and ``x`` (…, groups, 1 or d), the gate's
    input, given the identity rule's gradient x 1/2: ``x.grad = 0.5 * sum over broadcast of p.grad * p / x``."""
    coefficient = 0.5 * _safe_ratio(p, x.expand_as(p) if x.shape != p.shape else x)
    return scale_grad(p, 0.5) + ((x - x.detach()) * coefficient).to(p.dtype)


def _output_forward(gates: list[torch.Tensor], groups: int, bias: torch.Tensor | None):
    def make(original):
        def forward(p, *args, **kwargs):
            if not gates:
                raise RuntimeError("the attention output gate's projection did not run before its output projection")
            g = gates.pop()
            shape = p.shape
            x = g.view(*shape[:-1], groups, -1)
            if bias is not None:
                x = x + bias[:, None].to(x.dtype)
            ruled = gated_output_rule(p.view(*shape[:-1], groups, -1), x)
            return original(ruled.view(shape), *args, **kwargs)

        return forward

    return make


def _keep_and_detach(gates: list[torch.Tensor]):
    def hook(_module, _args, output):
        g = output_tensor(output)
        gates.clear()  # a forward that did not reach the output projection (an error) leaves nothing behind
        gates.append(g)
        return g.detach()

    return hook


def install_attention_gates(
    patch: ModelPatch, attentions: list[nn.Module], parts: AttentionOutputGateParts, rules: str
) -> None:
    """The output gate of every attention module in ``attentions`` under ``rules`` (see the module docstring)."""
    for attn in attentions:
        gate = getattr(attn, parts.gate, None)
        if not isinstance(gate, nn.Linear) or not isinstance(getattr(attn, parts.output, None), nn.Linear):
            raise UnsupportedModelError(
                f"{type(attn).__name__}: no '{parts.gate}' / '{parts.output}' projections for its output gate; "
                "this checkpoint's layout is not supported"
            )
        groups, bias = gate_layout(attn, parts)
        if GATE_RULE[rules] != "uniform":
            patch.hook_output(gate, detach_output)
            continue
        gates: list[torch.Tensor] = []
        patch.hook_output(gate, _keep_and_detach(gates))
        patch.override_forward(getattr(attn, parts.output), _output_forward(gates, groups, bias))
