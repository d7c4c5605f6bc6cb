"""LayerNorm variants read from the module: with or without weight and bias, ``weight`` or ``1 + weight``.

transformers' decoders use several LayerNorms that all compute
``(x - mean(x)) / sqrt(var(x) + eps) * (offset + weight) + bias`` over the last dimension:
``nn.LayerNorm`` (GPT-2, StableLM, Jais-2), Cohere's mean-centred norm without bias
(``variance_epsilon``), OLMo-1's norm without any parameter (eps 1e-5 in its code),
Nemotron's ``LayerNorm1P`` (``offset`` 1, ``weight + 1``). The rule is the same for all of
them: ``1 / sqrt(var + eps)`` held constant (Ali et al., ICML 2022, LN rule), the mean
subtraction, the scale and the bias stay as they are. :func:`layer_norm_convention` reads
``eps`` and the offset from the module's own forward on a probe (not from its class name),
and refuses a norm that the formula does not reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import output_tensor
from lrp_llm.mechanism.primitives import layer_norm_detached, layer_norm_jacobian

# transformers' LayerNorms without an eps attribute (OLMo-1) use F.layer_norm's usual 1e-5
_DEFAULT_EPS = 1e-5


@dataclass(frozen=True)
class LayerNormConvention:
    """``eps`` and the scale's offset of one LayerNorm class (0.0: ``* weight``; 1.0: ``* (1 + weight)``)."""

    eps: float
    offset: float


def _eps(module: nn.Module) -> float:
    for name in ("eps", "variance_epsilon"):
        value = getattr(module, name, None)
        if isinstance(value, float | int):
            return float(value)
    return _DEFAULT_EPS


def _parameter(module: nn.Module, name: str) -> torch.Tensor | None:
    value = getattr(module, name, None)
    return value if isinstance(value, torch.Tensor) else None


def _normalized_width(module: nn.Module) -> tuple[int, ...] | None:
    """The shape the norm's parameters have (weight), or its ``normalized_shape`` where it has none."""
    weight = _parameter(module, "weight")
    if weight is not None:
        return tuple(weight.shape)
    shape = getattr(module, "normalized_shape", None)
    return tuple(shape) if isinstance(shape, tuple | list) else None


def layer_norm_effective(module: nn.Module, x: torch.Tensor, convention: LayerNormConvention, *, forward_mode: bool):
    """The norm of ``x`` (..., d) with ``1 / sigma`` constant: the module's weight (plus the offset) and bias."""
    weight = _parameter(module, "weight")
    if weight is not None and convention.offset:
        weight = weight + convention.offset
    layer_norm = layer_norm_jacobian if forward_mode else layer_norm_detached
    return layer_norm(x, weight, _parameter(module, "bias"), convention.eps)


def layer_norm_convention(module: nn.Module) -> LayerNormConvention:
    """``eps`` (from ``eps`` / ``variance_epsilon``, else 1e-5) and the offset that reproduce ``module``'s forward.

    The probe (seeded, shape (2, *normalized shape), in the parameters' dtype) has one row of
    scale 3 and one of scale 0.01, where ``eps`` matters: a norm whose output neither
    convention reproduces within rounding is refused with an error naming its class.
    """
    shape = _normalized_width(module)
    if shape is None:
        raise UnsupportedModelError(
            f"{type(module).__name__}: a LayerNorm without weight or normalized_shape; this norm is not supported"
        )
    weight = _parameter(module, "weight")
    dtype = weight.dtype if weight is not None and weight.is_floating_point() else torch.float32
    device = weight.device if weight is not None else torch.device("cpu")
    probe = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    probe = (probe * torch.tensor([3.0, 0.01], dtype=torch.float64).view(2, *([1] * len(shape)))).to(device, dtype)
    eps = _eps(module)
    with torch.no_grad():
        actual = output_tensor(module.forward(probe)).double()
        errors = {
            offset: float(
                (layer_norm_effective(module, probe, LayerNormConvention(eps, offset), forward_mode=False).double())
                .sub(actual)
                .abs()
                .max()
            )
            for offset in ((0.0, 1.0) if weight is not None else (0.0,))
        }
    offset = min(errors, key=errors.__getitem__)
    # transformers' norms compute in float32 at least, also for a float64 model
    rounding = max(torch.finfo(dtype).eps, torch.finfo(torch.float32).eps)
    tolerance = 16 * rounding * (1.0 + float(actual.abs().max()))
    if not errors[offset] <= tolerance:
        raise UnsupportedModelError(
            f"{type(module).__name__}: its output is not (x - mean) / sqrt(var + {eps}) * weight (+ bias), "
            "nor with (1 + weight); this norm is not supported"
        )
    return LayerNormConvention(eps, offset)


def layer_norm_forward(module: nn.Module, convention: LayerNormConvention, forward_mode: bool):
    """A forward override (for :meth:`ModelPatch.override_forward`) computing the norm with ``1 / sigma`` constant."""

    def make(_original):
        def forward(hidden_states, *args, **kwargs):
            return layer_norm_effective(module, hidden_states, convention, forward_mode=forward_mode)

        return forward

    return make
