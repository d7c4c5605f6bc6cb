"""Rules for mixture-of-experts blocks: transformers 5's fused experts modules and shared-expert gates.

A routed MoE block computes, per token, ``y = sum_k w_k(x) * E_k(x)`` over the ``k`` experts
its router selected, where ``w_k`` are the router's scores (a softmax or sigmoid of router
logits of ``x``, perhaps renormalised over the selection) and ``E_k(x) = down(act(g) * u)``
with ``g, u`` from the expert's fused ``gate_up`` projection. Rules:

- ``w_k * E_k``, a product of two input-dependent factors: AttnLRP gives it the uniform
  rule (half of the relevance to each side: the gradient of the experts' output is halved;
  the router side continues with its plain gradient through softmax/sigmoid, which is
  AttnLRP's softmax rule); CP-LRP and RelP hold the router scores constant (detached), so
  the block is linear in the experts' outputs and conserves exactly.
- the top-k selection is piecewise constant: it has no gradient under any rule set, and the
  selected indices are used as the forward pass chose them.
- inside an expert, ``act(g) * u`` gets the gated MLP's rules (:data:`blocks.GATE_RULE`:
  identity rule x 1/2 on ``act(g)`` and x 1/2 on ``u``, or ``act(g)`` detached under CP-LRP);
  a non-gated expert's activation gets the identity rule.

transformers 5 decorates each experts class with ``use_experts_implementation``, which
dispatches its forward to a kernel chosen by ``config._experts_implementation`` (grouped_mm,
batched_mm, ...; grouped_mm refuses float64) and records the weight layout on the instance
(``has_gate``, ``has_bias``, ``is_transposed``, ``is_concatenated``, ``has_post_expert_norm``).
:func:`install_experts` gives each such module of the model an eager forward with the rules
that reads that layout, so one installer serves every family with this layout.

Component relevance reads each expert's weighted contribution ``w_k * E_k`` (over the tokens
routed to it) where this forward forms it: :func:`observed_contributions` passes every
contribution through a caller's function (a tap) just before it is added to the output. Under
AttnLRP the uniform rule's halving sits on each contribution (the same as on their sum) before
that point, so a tap sees the gradient of the MoE output itself and the experts' relevances
add up to the routed output's.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from lrp_llm.archs.blocks import GATE_RULE, detach_output, scale_output
from lrp_llm.archs.description import MoEParts
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch
from lrp_llm.mechanism.primitives import identity_rule, scale_grad, silu_ratio

# rule set -> what the product of router scores and expert outputs (and a shared expert's gate) gets
ROUTER_RULE = {"attnlrp": "uniform", "cp-lrp": "detach", "relp": "detach"}
_LAYOUT = ("has_gate", "has_bias", "is_transposed", "is_concatenated", "has_post_expert_norm")


def is_fused_experts(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers 5 fused experts module: 3-D ``down_proj`` [E, ...] and the layout flags."""
    down = getattr(module, "down_proj", None)
    return (
        isinstance(down, torch.Tensor)
        and down.dim() == 3
        and all(isinstance(getattr(module, flag, None), bool) for flag in _LAYOUT)
    )


def is_input_scaled_experts(module: nn.Module) -> bool:
    """Whether ``module`` is the experts module of a Llama-4 style MoE block (the router's scores scale the
    experts' input): 3-D ``gate_up_proj`` [E, hidden, 2 * d] and ``down_proj`` [E, d, hidden], every expert run on
    every token, without the fused layout's flags."""
    gate_up, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    return (
        isinstance(gate_up, torch.Tensor)
        and isinstance(down, torch.Tensor)
        and gate_up.dim() == down.dim() == 3
        and not is_fused_experts(module)
    )


def experts_modules(model: nn.Module) -> list[nn.Module]:
    """The fused experts modules of ``model``, in module order."""
    return [m for m in model.modules() if is_fused_experts(m)]


def _check_layout(module: nn.Module) -> str:
    """The gating function of ``module``'s experts: "default" (``act(g) * u``) or "clamped_swiglu" (gpt-oss).

    A family's own ``_apply_gate`` is recognised by its output on a probe input, not by its
    name; one that matches no known form is refused with a one-line error naming the class.
    """
    from transformers.integrations.moe import _default_apply_gate

    name = type(module).__name__
    if getattr(module, "_is_expert_parallel", False):
        raise UnsupportedModelError(
            f"{name}: expert-parallel experts are not supported by the LRP rules; load the model on one device"
        )
    if not module.has_gate or getattr(type(module), "_apply_gate", _default_apply_gate) is _default_apply_gate:
        return "default"
    if _is_clamped_swiglu(module):
        return "clamped_swiglu"
    if _is_plain_gate(module):
        return "default"
    raise UnsupportedModelError(
        f"{name}: its experts' gating function (_apply_gate) has no LRP rule; this checkpoint's layout is not supported"
    )


def _clamped_swiglu_value(
    gate_up: torch.Tensor, limit: float, alpha: float, concatenated: bool = False
) -> tuple[torch.Tensor, ...]:
    """gpt-oss's gate: ``g' = min(g, L)``, ``u' = clamp(u, -L, L)``, ``glu = g' * sigmoid(alpha * g')``;
    returns ``(g, u, u' + 1, glu)``, the same operations as transformers. ``gate_up`` interleaved (gpt-oss) or,
    ``concatenated``, ``[g | u]`` (MiniMax-M3)."""
    gate, up = gate_up.chunk(2, dim=-1) if concatenated else (gate_up[..., ::2], gate_up[..., 1::2])
    clamped = gate.clamp(min=None, max=limit)
    glu = clamped * torch.sigmoid(clamped * alpha)
    return gate, up, up.clamp(min=-limit, max=limit) + 1, glu


def _swiglu_alpha(module: nn.Module) -> float | None:
    # gpt-oss names it ``alpha``, MiniMax-M3 ``swiglu_alpha``
    return getattr(module, "alpha", getattr(module, "swiglu_alpha", None))


def _is_clamped_swiglu(module: nn.Module) -> bool:
    limit, alpha = getattr(module, "limit", None), _swiglu_alpha(module)
    if not (isinstance(limit, int | float) and isinstance(alpha, int | float)):
        return False
    width = module.down_proj.shape[1 if module.is_transposed else 2]
    probe = 2 * limit * torch.randn(3, 2 * width, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        _, _, shifted, glu = _clamped_swiglu_value(probe, limit, alpha, module.is_concatenated)
        return bool(torch.allclose(module._apply_gate(probe), shifted * glu, rtol=1e-12, atol=1e-12))


def _is_plain_gate(module: nn.Module) -> bool:
    """Whether the family's ``_apply_gate`` computes ``act(g) * u`` of the layout's halves, perhaps in float32
    (Beam): probed in float32 against the default form."""
    width = module.down_proj.shape[1 if module.is_transposed else 2]
    probe = 3 * torch.randn(3, 2 * width, generator=torch.Generator().manual_seed(0))
    if module.is_concatenated:
        gate, up = probe.chunk(2, dim=-1)
    else:
        gate, up = probe[..., ::2], probe[..., 1::2]
    with torch.no_grad():
        applied, want = module._apply_gate(probe), module.act_fn(gate) * up
        return applied.shape == want.shape and bool(torch.allclose(applied, want, rtol=1e-6, atol=1e-6))


def clamped_swiglu(
    gate_up: torch.Tensor, limit: float, alpha: float, gate_rule: str, concatenated: bool = False
) -> torch.Tensor:
    """gpt-oss's ``(clamp(u) + 1) * swish_alpha(min(g, L))`` under the rules.

    The gate side ``g -> min(g, L) * sigmoid(alpha * min(g, L))`` is one element-wise
    activation: identity rule. The product with ``u' + 1``: uniform rule (x 1/2 each side;
    the up side loses what its ``+ 1`` absorbs) under AttnLRP and RelP; under CP-LRP the
    ``u' + 1`` side is held constant (not the gate side: the ``+ 1`` would absorb relevance),
    so all of it passes through the gate side and the product conserves.
    """
    gate, _up, shifted, glu = _clamped_swiglu_value(gate_up, limit, alpha, concatenated)
    if gate_rule == "plain":
        return shifted * glu
    if gate_rule == "detach":
        return shifted.detach() * identity_rule(gate, glu)
    return scale_grad(shifted, 0.5) * identity_rule(gate, glu, 0.5)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool) -> torch.Tensor:
    """``x`` (n, in) times one expert's weight: [out, in] (``x W^T``) or, transposed, [in, out] (``x W``)."""
    out = x @ weight if transposed else nn.functional.linear(x, weight)
    return out if bias is None else out + bias


def gated_product(act_fn, gate: torch.Tensor, up: torch.Tensor, gate_rule: str) -> torch.Tensor:
    """``act(gate) * up`` under the gated MLP's rule: "uniform" (identity rule x 1/2, up x 1/2) or "detach" (gate constant)."""
    activated = act_fn(gate)
    if gate_rule == "plain":  # no rule set (grad-x-input): the plain product
        return activated * up
    if gate_rule == "detach":
        return activated.detach() * up
    is_silu = isinstance(act_fn, nn.SiLU) or type(act_fn).__name__ == "SiLUActivation"
    ratio = silu_ratio(gate) if is_silu else None
    return identity_rule(gate, activated, 0.5, ratio) * scale_grad(up, 0.5)


def expert_forward(
    module: nn.Module, expert: int, x: torch.Tensor, gate_rule: str, gating: str = "default"
) -> torch.Tensor:
    """Expert ``expert`` of the fused ``module`` on its tokens ``x`` (n, hidden) -> (n, hidden), with the rules inside.

    ``gating``: the experts' gating function, as :func:`_check_layout` found it.
    """
    transposed = module.is_transposed
    first = "gate_up_proj" if module.has_gate else "up_proj"
    bias = getattr(module, f"{first}_bias")[expert] if module.has_bias else None
    h = _linear(x, getattr(module, first)[expert], bias, transposed)
    if gating == "clamped_swiglu":
        h = clamped_swiglu(h, module.limit, _swiglu_alpha(module), gate_rule, module.is_concatenated)
    elif module.has_gate:
        if module.is_concatenated:
            gate, up = h.chunk(2, dim=-1)
        else:  # interleaved [g0, u0, g1, u1, ...]
            gate, up = h[..., ::2], h[..., 1::2]
        h = gated_product(module.act_fn, gate, up, gate_rule)
    else:
        h = module.act_fn(h) if gate_rule == "plain" else identity_rule(h, module.act_fn(h))
    bias = module.down_proj_bias[expert] if module.has_bias else None
    h = _linear(h, module.down_proj[expert], bias, transposed)
    if module.has_post_expert_norm:
        h = module.post_expert_norm(h)
    return h


# experts module -> the function each weighted contribution passes through (component taps)
Observe = Callable[[int, torch.Tensor], torch.Tensor]
_OBSERVERS: weakref.WeakKeyDictionary[nn.Module, Observe] = weakref.WeakKeyDictionary()


def routed_forward(module: nn.Module, rules: str | None, gating: str = "default"):
    """The make-function for :meth:`ModelPatch.override_forward`: ``module``'s eager forward with ``rules``
    (None: no rule set, plain gradients).

    The forward takes ``hidden_states`` (tokens, hidden), ``top_k_index`` and ``top_k_weights``
    (tokens, k) and returns (tokens, hidden), the same as the module's own forward. Each expert's
    weighted contribution passes through the observer :func:`observed_contributions` set, if any.
    """
    if rules is None:
        gate_rule, router_rule = "plain", "plain"
    else:
        gate_rule, router_rule = GATE_RULE[rules], ROUTER_RULE[rules]
    n_experts = module.down_proj.shape[0]

    def make(_original):
        def forward(hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
            weights = top_k_weights if router_rule in ("uniform", "plain") else top_k_weights.detach()
            out = torch.zeros_like(hidden_states)
            observe = _OBSERVERS.get(module)
            for expert in torch.unique(top_k_index).tolist():
                if not 0 <= expert < n_experts:  # a sentinel index marks an empty slot
                    continue
                token, slot = torch.where(top_k_index == expert)
                h = expert_forward(module, expert, hidden_states[token], gate_rule, gating)
                contribution = (h * weights[token, slot, None]).to(out.dtype)
                if router_rule == "uniform":  # the uniform rule on w_k * E_k: half of the gradient to each factor
                    contribution = scale_grad(contribution, 0.5)
                if observe is not None:  # after the halving: the tap sees the gradient of the MoE output
                    contribution = observe(expert, contribution)
                out.index_add_(0, token, contribution)
            return out

        forward.lrp_routed = True  # type: ignore[attr-defined]
        return forward

    return make


def _routed(module: nn.Module) -> bool:
    """Whether ``module`` runs :func:`routed_forward` (the rules installed it)."""
    attr = "_old_forward" if hasattr(module, "_hf_hook") and hasattr(module, "_old_forward") else "forward"
    return bool(getattr(module.__dict__.get(attr), "lrp_routed", False))


def input_scaled_experts(
    experts: nn.Module, routed_in: torch.Tensor, gate_rule: str, observe: Observe | None
) -> torch.Tensor:
    """A Llama-4 style experts module on its input ``routed_in`` (E, tokens, hidden), each expert's rows its
    tokens scaled by its router score (0 where not selected) -> (E, tokens, hidden), ``down(act(g) * u)`` per
    expert under ``gate_rule``. Expert ``e``'s output is its contribution to the block's output (summed over the
    experts by the block): ``observe(e, output)`` takes its place where given. An expert has no bias, so its
    output is 0 on the tokens not routed to it."""
    gate, up = torch.bmm(routed_in, experts.gate_up_proj).chunk(2, dim=-1)
    out = torch.bmm(gated_product(experts.act_fn, gate, up, gate_rule), experts.down_proj)
    if observe is None:
        return out
    return torch.stack([observe(e, out[e]) for e in range(out.shape[0])])


def _plain_input_scaled_forward(module: nn.Module):
    # the experts module's own call (transformers' block: ``experts(routed_in)`` on (E * tokens, hidden)) with
    # plain gradients, each expert's output passed through the observer
    def make(_original):
        def forward(hidden_states: torch.Tensor) -> torch.Tensor:
            routed_in = hidden_states.view(module.gate_up_proj.shape[0], -1, hidden_states.shape[-1])
            out = input_scaled_experts(module, routed_in, "plain", _OBSERVERS.get(module))
            return out.reshape(-1, out.shape[-1])

        return forward

    return make


@contextmanager
def observed_contributions(
    modules: Sequence[nn.Module], observe: Callable[[nn.Module, int, torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """For one ``with`` block, every weighted contribution ``w_k * E_k`` (tokens routed to expert ``k``, hidden)
    that the fused experts ``modules`` form passes through ``observe(module, k, contribution)``, whose result
    is added to the output in its place. A module whose forward is not :func:`routed_forward` yet (no rule set:
    grad-x-input) gets it with plain gradients for the block. Restored on leaving, also on error."""
    with ExitStack() as stack:
        try:
            for module in modules:
                if is_input_scaled_experts(module):
                    # without the rules transformers' block calls the experts module; with them
                    # (input_scaled_forward) the block runs the experts itself and reads the observer
                    patch = stack.enter_context(ModelPatch(module))
                    patch.override_forward(module, _plain_input_scaled_forward(module))
                elif not _routed(module):
                    patch = stack.enter_context(ModelPatch(module))
                    patch.override_forward(module, routed_forward(module, None, _check_layout(module)))
                _OBSERVERS[module] = lambda k, c, module=module: observe(module, k, c)
            yield
        finally:
            for module in modules:
                _OBSERVERS.pop(module, None)


def install_experts(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The eager forward with ``rules`` on every fused experts module of ``model`` (refused where its layout has no rule)."""
    for module in model.modules():
        down = getattr(module, "down_proj", None)
        if isinstance(down, torch.Tensor) and down.dim() == 3 and not is_fused_experts(module):
            raise UnsupportedModelError(
                f"{type(module).__name__}: experts without transformers' fused-experts layout have no LRP rule here; "
                "this checkpoint's layout is not supported"
            )
    for module in experts_modules(model):
        gating = _check_layout(module)
        patch.override_forward(module, routed_forward(module, rules, gating))


def install_shared_gates(patch: ModelPatch, model: nn.Module, parts: MoEParts, rules: str) -> None:
    """``sigmoid(shared_gate(x)) * shared_expert(x)``: the uniform rule on the product (each side's gradient
    x 1/2) under AttnLRP; the gate a constant under CP-LRP and RelP."""
    if parts.shared_gate is None:
        return
    for block in model.modules():
        gate = getattr(block, parts.shared_gate, None)
        shared = getattr(block, parts.shared_expert, None)
        if not (isinstance(gate, nn.Module) and isinstance(shared, nn.Module)):
            continue
        if ROUTER_RULE[rules] == "uniform":
            patch.hook_output(gate, scale_output(0.5))
            patch.hook_output(shared, scale_output(0.5))
        else:
            patch.hook_output(gate, detach_output)


def _input_scaled_blocks(model: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in model.modules()
        if all(isinstance(getattr(m, a, None), nn.Module) for a in ("router", "experts", "shared_expert"))
        and isinstance(getattr(m.experts, "gate_up_proj", None), torch.Tensor)
        and m.experts.gate_up_proj.dim() == 3
    ]


def input_scaled_forward(block: nn.Module, rules: str):
    """The make-function for a Llama-4 MoE block's forward with ``rules``: (batch, pos, hidden) ->
    ((tokens, hidden), router logits), as the block's own.

    ``routed_in = x * w`` (w: the router's sigmoid scores, 0 for unselected experts) is a product
    of two input-dependent factors: uniform rule (x 1/2 to each) under AttnLRP, ``w`` held
    constant under CP-LRP and RelP. Each expert ``down(act(g) * u)`` on ``routed_in`` gets the
    gated MLP's rules; the sum over experts and the shared expert are linear. Each expert's output (its
    contribution, :func:`input_scaled_experts`) passes through the observer :func:`observed_contributions` set.
    """
    gate_rule, router_rule = GATE_RULE[rules], ROUTER_RULE[rules]
    experts = block.experts

    def make(_original):
        def forward(hidden_states: torch.Tensor):
            hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
            scores, logits = block.router(hidden)  # (tokens, experts)
            if router_rule == "uniform":
                scores, x_side = scale_grad(scores, 0.5), scale_grad(hidden, 0.5)
            else:
                scores, x_side = scores.detach(), hidden
            n_experts = scores.shape[1]
            routed_in = x_side.repeat(n_experts, 1) * scores.transpose(0, 1).reshape(-1, 1)
            routed_in = routed_in.view(n_experts, -1, hidden.shape[-1])
            routed_out = input_scaled_experts(experts, routed_in, gate_rule, _OBSERVERS.get(experts))
            out = block.shared_expert(hidden)
            out.add_(routed_out.sum(dim=0))
            return out, logits

        return forward

    return make


def install_moe(patch: ModelPatch, model: nn.Module, parts: MoEParts, rules: str) -> None:
    """The routed experts and the shared-expert gates of every MoE block of ``model``."""
    if parts.scores_scale_input:
        for block in _input_scaled_blocks(model):
            patch.override_forward(block, input_scaled_forward(block, rules))
        return
    install_experts(patch, model, rules)
    install_shared_gates(patch, model, parts, rules)
