"""The few autograd primitives every LRP rule here is made of.

All rules are written in gradient x input form (see docs/design.md): after one ordinary
backward pass the relevance of a tensor ``h`` is ``h * h.grad``. Linear maps need
nothing; only the non-linear places get a modified local gradient:

- :func:`scale_grad` multiplies the gradient by a constant. The uniform rule for a
  product of two input-dependent factors (Achtibat et al., ICML 2024, "AttnLRP") is a
  gradient halving on each factor; in attention Q and K sit under two products
  (quarter each) and V under one (half).
- :func:`identity_rule` for element-wise activations (SiLU, GELU, ...): the value is
  ``f(x)``, the local gradient is ``f(x) / x``, so the relevance ``x * grad`` that leaves
  the activation equals the relevance that entered it.
- :func:`rms_norm_detached` / :func:`layer_norm_detached`: the ``1 / sigma`` factor is
  a constant in the backward pass (Ali et al., ICML 2022, LN rule).
- softmax needs no change: its plain gradient times input is the AttnLRP softmax rule,
  so fused attention kernels stay.
"""

from __future__ import annotations

import torch

# |x| below this is treated as this (with the sign of x) when dividing f(x) / x.
_STABILISER = 1e-12


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity in the forward pass; the backward pass multiplies the gradient by ``factor``."""
    if factor == 1.0:
        return x
    return _ScaleGrad.apply(x, factor)


def _safe_ratio(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y / x`` computed in float32 at least, with ``|x|`` kept away from zero."""
    xf = x.detach()
    yf = y.detach()
    if xf.dtype in (torch.float16, torch.bfloat16):
        xf, yf = xf.float(), yf.float()
    denom = torch.where(xf >= 0, xf.clamp(min=_STABILISER), xf.clamp(max=-_STABILISER))
    return yf / denom


class _IdentityRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, factor: float, ratio: torch.Tensor | None) -> torch.Tensor:
        ratio = _safe_ratio(y, x) if ratio is None else ratio.detach()
        if factor != 1.0:
            ratio = ratio * factor
        ctx.save_for_backward(ratio)
        ctx.x_dtype = x.dtype
        return y.detach().view_as(y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ratio,) = ctx.saved_tensors
        return (grad * ratio).to(ctx.x_dtype), None, None, None


def identity_rule(
    x: torch.Tensor, y: torch.Tensor, factor: float = 1.0, ratio: torch.Tensor | None = None
) -> torch.Tensor:
    """Element-wise activation ``y = f(x)`` passed on by the identity rule.

    Returns a tensor equal to ``y`` whose gradient with respect to ``x`` is
    ``factor * f(x) / x``, so ``x * x.grad == factor * y * y.grad`` element by element.
    ``factor=0.5`` merges the uniform rule of a gate product into the activation.
    ``ratio``: ``f(x) / x`` when the caller has it in closed form (:func:`silu_ratio`).
    """
    return _IdentityRule.apply(x, y, factor, ratio)


def silu_ratio(x: torch.Tensor) -> torch.Tensor:
    """``silu(x) / x`` in closed form: ``sigmoid(x)`` (one operation, exact at 0), float32 at least."""
    xd = x.detach()
    return torch.sigmoid(xd.float() if xd.dtype in (torch.float16, torch.bfloat16) else xd)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norm statistics in float32 at least (as transformers does), float64 when given."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rms_norm_detached(x: torch.Tensor, weight: torch.Tensor | None, eps: float, *, offset: float = 0.0) -> torch.Tensor:
    """RMSNorm ``x / rms(x) * (offset + weight)`` with ``1 / rms(x)`` held constant.

    ``x``: (..., d). Computed in float32 like the transformers implementations and
    cast back; ``offset=1.0`` is the Gemma convention ``(1 + weight)``.
    """
    dtype = x.dtype
    xf = x.to(_compute_dtype(dtype))
    inv = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps).detach()
    out = xf * inv
    if weight is None:
        return out.to(dtype)
    if offset:
        return (out * (offset + weight.to(out.dtype))).to(dtype)
    return weight * out.to(dtype)


def layer_norm_detached(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """LayerNorm with the standard deviation held constant (the mean stays linear)."""
    dtype = x.dtype
    xf = x.to(_compute_dtype(dtype))
    centred = xf - xf.mean(-1, keepdim=True)
    inv = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps).detach()
    out = centred * inv
    if weight is not None:
        out = out * weight.to(out.dtype)
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.to(dtype)


# ------------------------------------------------------------------ detach forms
# The same rules written as ``x.detach() + f * (x - x.detach())``: the value is unchanged and
# the local Jacobian is the rule's in reverse mode and in forward mode (``torch.func.jvp``)
# alike; BiLRP on encoders runs in forward mode (:mod:`lrp_llm.analyses.bilrp`).


def scaled_jacobian(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` in value; local Jacobian ``factor * I`` in both AD modes (detach form of ``scale_grad``)."""
    if factor == 1.0:
        return x
    xd = x.detach()
    return xd + factor * (x - xd)


def identity_jacobian(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y = f(x)`` in value; local Jacobian ``diag(f(x) / x)`` (detach form of ``identity_rule``)."""
    xd, yd = x.detach(), y.detach()
    ratio = _safe_ratio(yd, xd).to(y.dtype)
    return yd + ratio * (x - xd)


def layer_norm_jacobian(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """LayerNorm with ``1 / std`` constant (:func:`layer_norm_detached`, same numbers).

    The statistic is computed from ``x.detach()``, so in forward mode it is computed once
    for the primal instead of being carried along with every tangent.
    """
    if x.dtype not in (torch.float32, torch.float64):
        return layer_norm_detached(x, weight, bias, eps)
    inv = torch.rsqrt(x.detach().var(-1, unbiased=False, keepdim=True) + eps)
    out = (x - x.mean(-1, keepdim=True)) * inv
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out
