"""Variants of AttnLRP's attention rules, each a rule set of its own name ("attnlrp" itself is untouched).

Everything outside the attention (norms, gated MLPs, MoE weights, gates) keeps AttnLRP's rules;
only the Q/K path and the softmax change:

==================  ==========================================  =========================================
rule set            Q/K path (the attention probabilities A)    softmax rule
==================  ==========================================  =========================================
attnlrp             uniform: Q, K x 1/4, V x 1/2 (every layer)  gradient x input (AttnLRP's rule)
attnlrp-qk-held     held: Q, K constant, V x 1 (every layer)    none (A is a constant)
attnlrp-qk-late     uniform in the first ceil(n/2) attention    as attnlrp where uniform
                    layers, held in the last floor(n/2)
attnlrp-eps         uniform                                     epsilon rule, bias share redistributed
attnlrp-sink        uniform                                     AttnLRP's, the share of key 0 held apart
==================  ==========================================  =========================================

``attnlrp-qk-held`` and CP-LRP treat the attention alike (A constant, the block linear in V);
they differ where CP-LRP also holds other multiplicative gates constant: CP-LRP holds the
gated MLP's ``act(gate)`` (and MoE routing weights, attention output gates), AttnLRP and this
variant split those products by the uniform rule (:mod:`lrp_llm.archs.blocks`' table).

``attnlrp-qk-late`` splits by the model's depth: of ``n`` attention modules (in module
order, i.e. layer order) the first ``ceil(n / 2)`` keep the uniform rule and the last
``floor(n / 2)`` hold Q/K (SmolLM2-135M, 30 layers: 0-14 uniform, 15-29 held). The half
split is the one choice without a tuned parameter: it asks whether the later layers (where
the answer's evidence is read out) or the earlier ones carry the Q/K relevance that differs.

``attnlrp-eps``. The softmax ``y = softmax(x)`` linearised at ``x``: ``y_j = sum_i J_ji x_i + b_j``
with ``J_ji = y_j (delta_ij - y_i)``. AttnLRP's rule gives input ``i`` the relevance
``x_i sum_j J_ji R_j / y_j``: the denominator is ``y_j``, the input part ``z_j = sum_i J_ji x_i
= y_j (x_j - sum_k y_k x_k)`` plus the bias ``b_j``, so the share ``b_j / y_j`` of ``R_j`` is
not passed on (it may be larger than ``R_j``, or negative). The epsilon rule (Bach et al.
2015) on the input part alone, ``R_in_i = x_i sum_j J_ji R_j / (z_j + eps sign(z_j))``, passes
the share ``z_j / (z_j + eps sign(z_j))`` of each ``R_j`` on (never more than ``R_j``, same
sign), so it conserves up to what epsilon absorbs. In gradient x input form it is the
softmax's own backward applied to the incoming gradient times ``y_j / (z_j + eps sign(z_j))``.
``eps = 0.01``: ``z_j`` is a share of one query's attention mass (a row sums to 1), and
entries whose input-explained mass is above 0.1 pass at least 91 % of their relevance while
entries below 0.01 (near-zero weights, masked keys) pass less than half: epsilon absorbs
relevance only where the denominator is too small to divide by, as in epsilon-LRP.
The softmax is computed explicitly (eager attention in the model's dtype, softmax in float32
at least, as transformers' eager function), so this variant does not use fused kernels.

``attnlrp-sink``. Most heads put much of their attention on the first position (the BOS or
chat-start token: the attention sink), and AttnLRP's softmax rule hands the scores of that
key, ``x_t0`` for every query ``t``, relevance that then flows to ``k_0`` (the first token) and
to ``q_t``; on SmolLM2 the first token ends up with a large share of |relevance|. This variant
holds that relevance apart: the scores of key 0 are constants for the rules (nothing flows on
from them), and what AttnLRP's rule gives them, ``sum`` over layers, heads and queries of
``R(x_t0)``, is collected in a :class:`SinkAccount` instead of being dropped: the causal-LM
engine reports it per explained token (``meta["held_apart"]``), and the conservation line shows
``(sum of input relevance + held apart) / logit``. The relevance through the values ``V_0``
(A V's other half) still reaches the first token. Where no account is read (batched
evaluation), the held-apart share is not collected; the input relevance is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lrp_llm.archs.description import AttentionFunctionParts, AttentionParts
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch

UNIFORM: tuple[float | None, float | None, float] = (0.25, 0.25, 0.5)
HELD: tuple[float | None, float | None, float] = (None, None, 1.0)
SOFTMAX_EPSILON = 0.01


@dataclass(frozen=True)
class AttentionVariant:
    """``qk``: "uniform", "held" (every layer) or "late" (held in the later half); ``softmax_eps``:
    the epsilon of the softmax rule (None: AttnLRP's rule); ``base``: the rule set of the rest."""

    qk: str = "uniform"
    softmax_eps: float | None = None
    sink: bool = False
    base: str = "attnlrp"

    @property
    def explicit(self) -> bool:
        """The variant computes the attention itself (its softmax rule differs from the plain gradient)."""
        return self.softmax_eps is not None or self.sink


VARIANTS: dict[str, AttentionVariant] = {
    "attnlrp-qk-held": AttentionVariant(qk="held"),
    "attnlrp-qk-late": AttentionVariant(qk="late"),
    "attnlrp-eps": AttentionVariant(softmax_eps=SOFTMAX_EPSILON),
    "attnlrp-sink": AttentionVariant(sink=True),
}
VARIANT_RULE_SETS: tuple[str, ...] = tuple(VARIANTS)


def held_layers(n: int) -> range:
    """Indices of the attention modules whose Q/K path ``attnlrp-qk-late`` holds: the last floor(n / 2)."""
    return range(n - n // 2, n)


def layer_factors(variant: AttentionVariant, n: int) -> list[tuple[float | None, float | None, float]]:
    """The (Q, K, V) gradient factors of each of ``n`` attention modules (None: held constant)."""
    if variant.qk == "uniform":
        return [UNIFORM] * n
    if variant.qk == "held":
        return [HELD] * n
    if variant.qk == "late":
        held = held_layers(n)
        return [HELD if i in held else UNIFORM for i in range(n)]
    raise ValueError(f"unknown Q/K rule {variant.qk!r}")


# ------------------------------------------------------------------ the softmax epsilon rule
class _SoftmaxEpsilonGrad(torch.autograd.Function):
    """Identity on the probabilities ``y``; the backward multiplies the gradient by ``y / (z + eps sign z)``."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(factor)
        return probs.view_as(probs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (factor,) = ctx.saved_tensors
        return (grad * factor).to(grad.dtype), None


def softmax_epsilon_factor(scores: torch.Tensor, probs: torch.Tensor, eps: float) -> torch.Tensor:
    """``y_j / (z_j + eps sign(z_j))`` with ``z_j = y_j (x_j - sum_k y_k x_k)`` over the last axis
    (0 where ``y_j = 0``; ``sign(0)`` taken as +1), computed in float32 at least."""
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    x, y = scores.detach().to(dtype), probs.detach().to(dtype)
    x = torch.where(y > 0, x, torch.zeros_like(x))  # masked keys (y = 0) carry a huge negative score
    z = y * (x - (y * x).sum(-1, keepdim=True))
    denom = torch.where(z >= 0, z + eps, z - eps)
    return torch.where(y > 0, y / denom, torch.zeros_like(y))


def softmax_epsilon_rule(scores: torch.Tensor, eps: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``softmax(scores, -1)`` in value; the backward is the epsilon softmax rule (see the module docstring)."""
    compute = torch.float64 if scores.dtype == torch.float64 else torch.float32
    probs = torch.softmax(scores.to(compute), dim=-1)
    ruled = _SoftmaxEpsilonGrad.apply(probs, softmax_epsilon_factor(scores, probs, eps))
    return ruled.to(dtype or scores.dtype)


def _causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    # query t (of the last q_len positions) sees keys 0 .. t + k_len - q_len
    rows = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)
    return torch.arange(k_len, device=device)[None, :] <= rows


class SinkAccount:
    """The relevance ``attnlrp-sink`` holds apart, collected as the gradient of one leaf.

    The engine gives ``leaf`` a (1, 1) tensor of ones that requires grad before the forward
    pass; every attention module multiplies the (held) scores of key 0 by it with gradient
    factor 1/2 (A's half of A V's relevance under the uniform rule), so ``leaf * leaf.grad`` is the
    relevance AttnLRP's softmax rule hands those scores, summed over layers, heads and queries.
    """

    def __init__(self) -> None:
        self.leaf: torch.Tensor | None = None

    def hold(self, first: torch.Tensor) -> torch.Tensor:
        """The scores of key 0 ``first`` (..., 1) as constants, their relevance routed to ``leaf``."""
        held = first.detach()
        if self.leaf is None:
            return held
        from lrp_llm.mechanism.primitives import scale_grad

        return held * scale_grad(self.leaf, 0.5).to(held.dtype)


def variant_attention(eps: float | None, sink: SinkAccount | None = None):
    """An attention function (transformers' signature) computing eager attention with the variant's softmax
    rule: the epsilon rule when ``eps`` is given (else AttnLRP's, the plain gradient), and the scores of key 0
    held apart into ``sink`` when given.

    ``attention_mask``: built for the model's own function: additive (float), boolean
    (True = attend), or None (causal when there is more than one query, as SDPA does).
    """

    def attention(module: nn.Module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
            raise UnsupportedModelError(f"{type(module).__name__}: learned attention sinks have no variant rule")
        groups = query.shape[1] // key.shape[1]
        if groups > 1:
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        scale = scaling if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
        scores = torch.matmul(query, key.transpose(2, 3)) * scale
        softcap = kwargs.get("softcap")
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        lowest = torch.finfo(scores.dtype).min
        if attention_mask is None:
            if query.shape[2] > 1 and getattr(module, "is_causal", True):
                scores = scores.masked_fill(~_causal_mask(query.shape[2], key.shape[2], scores.device), lowest)
        elif attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask[..., : key.shape[2]], lowest)
        else:
            scores = scores + attention_mask[..., : key.shape[2]]
        if sink is not None and scores.shape[-1] > 1:
            scores = torch.cat((sink.hold(scores[..., :1]), scores[..., 1:]), dim=-1)
        if eps is None:
            compute = torch.float64 if scores.dtype == torch.float64 else torch.float32
            weights = torch.softmax(scores.to(compute), dim=-1).to(query.dtype)
        else:
            weights = softmax_epsilon_rule(scores, eps, query.dtype)
        out = torch.matmul(weights, value)
        return out.transpose(1, 2).contiguous(), weights

    return attention


# ------------------------------------------------------------------ installer
def install_variant_attention(
    patch: ModelPatch,
    attentions: list[nn.Module],
    parts: object,
    variant: AttentionVariant,
) -> None:
    """The variant's rules on Q, K, V of every attention module, where they enter transformers' attention function."""
    from lrp_llm.archs.blocks import install_attention_function

    if not isinstance(parts, AttentionParts | AttentionFunctionParts):
        raise UnsupportedModelError("the AttnLRP variants need attention modules that call transformers' functions")
    function = None
    if variant.explicit:
        account = None
        if variant.sink:
            account = SinkAccount()
            patch.accounts["sink"] = account
        function = variant_attention(variant.softmax_eps, account)
    install_attention_function(
        patch, attentions, variant.base, factors=layer_factors(variant, len(attentions)), function=function
    )


__all__ = [
    "SOFTMAX_EPSILON",
    "VARIANTS",
    "VARIANT_RULE_SETS",
    "AttentionVariant",
    "SinkAccount",
    "variant_attention",
    "held_layers",
    "install_variant_attention",
    "layer_factors",
    "softmax_epsilon_factor",
    "softmax_epsilon_rule",
]
