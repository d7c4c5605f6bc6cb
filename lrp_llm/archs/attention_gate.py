"""Rules for an output gate on attention: ``o_proj(o * act(x))``, the one implementation for every family.

``x`` is the gate's input: a gate projection's output (AFMoE, Beam, Laguna, Bailing; Beam adds a
per-head bias) or the second half of each query head (Qwen3-Next, Qwen3.5), one gate per channel
of ``o`` or one per head (:class:`AttentionOutputGateParts` says which). ``o`` (the attention
output) and ``act(x)`` (sigmoid; softplus: Laguna) are two input-dependent factors, the same
product as a gated MLP's ``act(g) * u``, and get its rules (:data:`lrp_llm.archs.blocks.GATE_RULE`):

- AttnLRP and RelP, the uniform rule: ``p``'s gradient is halved (``p = o * act(x)``), so ``o``
  and everything upstream of it (the attention's Q, K, V factors) pass on half, and the gate's side
  passes the other half through ``act`` by the identity rule, so ``x * x.grad == 0.5 * p * p.grad``
  element by element (summed over head_dim for a per-head gate).
- CP-LRP: the gate is a constant, the block is linear in ``o``: exact conservation.

Why this rule and not the one the gated DeltaNet families had (Q, K, V factors halved, the gate's
gradient halved through the plain gradient of the sigmoid): halving Q, K and V's factors halves
the same relevance as halving ``p``'s gradient (the attention's backward is linear in the gradient
it receives, and ``o`` depends on the input only through Q, K, V), but the plain sigmoid gradient
gives ``x`` the relevance ``0.5 * p.grad * o * sigmoid(x) * (1 - sigmoid(x)) * x``, not the
``0.5 * p.grad * p`` that entered the gate's side: the uniform rule would not conserve. AttnLRP's
rule for an element-wise activation is the identity rule, as on the gated MLP and the gated norms.

Where the rule goes: the modules compute ``act`` inline (``torch.sigmoid``, ``F.softplus``),
after the gate projection (and a bias, or the query/gate split), so there is no module around
``act`` to hook. The gate projection's output hook hands the module the gate detached (``act``
then carries no gradient) and keeps the live one; the output projection's forward receives ``p``
and adds ``(x - x.detach()) * 0.5 * p / x``, which is zero in value (the forward is unchanged) and
gives ``x`` the identity rule's gradient ``0.5 * p.grad * o * act(x) / x``. Reading ``p / x``
instead of the gradient of ``act`` keeps saturated gates (sigmoid'(x) = 0 in float32 for x > 17)
from losing their relevance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lrp_llm.archs.blocks import GATE_RULE
from lrp_llm.archs.description import AttentionOutputGateParts
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch, output_tensor
from lrp_llm.mechanism.primitives import _safe_ratio, scale_grad

ACTIVATIONS = ("sigmoid", "softplus")


@dataclass(frozen=True)
class GateLayout:
    """One attention module's gate: ``p`` (…, width) is viewed as (…, groups, width // groups) and the gate's
    input ``x`` as (…, groups, 1 or width // groups); ``bias`` (groups,) is added to ``x``, or None.
    ``query_heads``: the number of heads of a [query | gate] per-head projection output, 0 for a gate projection."""

    groups: int
    bias: torch.Tensor | None
    query_heads: int


def _refuse(attn: nn.Module, n_gate: int, n_out: int) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{type(attn).__name__}: its output gate ({n_gate} wide, attention output {n_out}) has no rule here; "
        "this checkpoint's layout is not supported"
    )


def gate_layout(attn: nn.Module, parts: AttentionOutputGateParts) -> GateLayout:
    """The layout of ``attn``'s gate as ``parts`` describes it, checked against the checkpoint's widths.

    A gate whose width fits none of the layouts ``parts`` allows is refused (one-line error).
    """
    gate, output = getattr(attn, parts.gate), getattr(attn, parts.output)
    n_gate, n_out = gate.out_features, output.in_features
    if parts.act not in ACTIVATIONS:
        raise UnsupportedModelError(f"{type(attn).__name__}: its output gate's activation {parts.act!r} has no rule")
    query_heads = 0
    if parts.source == "query_heads":
        head_dim = getattr(attn, "head_dim", None)
        if not isinstance(head_dim, int) or n_gate != 2 * n_out or n_out % head_dim:
            raise _refuse(attn, n_gate // 2, n_out)
        query_heads, n_gate = n_out // head_dim, n_out
    bias = getattr(attn, parts.bias, None) if parts.bias is not None else None
    bias = bias if isinstance(bias, torch.Tensor) else None
    per_head = parts.groups == "head" or (parts.groups == "width" and n_gate != n_out)
    if per_head:
        groups = n_gate
        if n_out % groups or (bias is not None and bias.numel() != groups):
            raise _refuse(attn, n_gate, n_out)
    else:
        groups = bias.numel() if bias is not None else 1
        if n_gate != n_out or n_out % groups:
            raise _refuse(attn, n_gate, n_out)
    return GateLayout(groups, bias, query_heads)


def gated_output_rule(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``p`` (…, groups, d) unchanged in value; ``p``'s gradient halved and ``x`` (…, groups, 1 or d), the gate's
    input, given the identity rule's gradient x 1/2: ``x.grad = 0.5 * sum over broadcast of p.grad * p / x``."""
    coefficient = 0.5 * _safe_ratio(p, x.expand_as(p) if x.shape != p.shape else x)
    return scale_grad(p, 0.5) + ((x - x.detach()) * coefficient).to(p.dtype)


def _splitter(layout: GateLayout) -> Callable[[torch.Tensor], tuple[torch.Tensor, Callable]]:
    """``split(out) -> (gate, rebuild)``: the gate (…, n_gate) within the gate projection's output ``out``, and
    ``rebuild(g)``, ``out`` with its gate replaced by ``g`` (same values, other gradient)."""
    if not layout.query_heads:
        return lambda out: (out, lambda g: g)

    def split(out: torch.Tensor):
        query, gate = out.view(*out.shape[:-1], layout.query_heads, 2, -1).unbind(dim=-2)
        return gate.reshape(*out.shape[:-1], -1), lambda g: torch.stack((query, g.view_as(gate)), -2).view(out.shape)

    return split


def _hold_gate(keep: list[torch.Tensor] | None, split):
    """Forward hook on the gate projection: its gate detached in the output; the live gate kept in ``keep``."""

    def hook(_module, _args, output):
        gate, rebuild = split(output_tensor(output))
        if keep is not None:
            keep.clear()  # a forward that did not reach the output projection (an error) leaves nothing behind
            keep.append(gate)
        return rebuild(gate.detach())

    return hook


def _output_forward(gates: list[torch.Tensor], layout: GateLayout):
    def make(original):
        def forward(p, *args, **kwargs):
            if not gates:
                raise RuntimeError("the attention output gate's projection did not run before its output projection")
            g = gates.pop()
            shape = p.shape
            x = g.view(*shape[:-1], layout.groups, -1)
            if layout.bias is not None:
                x = x + layout.bias[:, None].to(x.dtype)
            ruled = gated_output_rule(p.view(*shape[:-1], layout.groups, -1), x)
            return original(ruled.view(shape), *args, **kwargs)

        return forward

    return make


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
        layout = gate_layout(attn, parts)
        if GATE_RULE[rules] != "uniform":
            patch.hook_output(gate, _hold_gate(None, _splitter(layout)))
            continue
        gates: list[torch.Tensor] = []
        patch.hook_output(gate, _hold_gate(gates, _splitter(layout)))
        patch.override_forward(getattr(attn, parts.output), _output_forward(gates, layout))
