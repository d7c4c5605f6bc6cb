"""The one check that relevance is finite, with advice that fits the model's precision.

NaN or infinite relevance has two causes: half precision overflowing (then float32
helps), or non-finite numbers in the checkpoint or its activations (then it does not,
and the message names the first non-finite tensor when there is one).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lrp_llm.errors import NonFiniteError

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def first_non_finite_tensor(model: nn.Module) -> str | None:
    """The name of the first parameter or buffer holding NaN or ±inf (None: all finite)."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and t.device.type != "meta" and not torch.isfinite(t).all():
            return name
    return None


def non_finite_error(model: nn.Module) -> NonFiniteError:
    """The error for non-finite relevance from ``model`` (only computed when it happens)."""
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.is_floating_point()})
    precision = ", ".join(dtypes) or "float32"
    bad = first_non_finite_tensor(model)
    if bad is not None:  # no precision helps
        return NonFiniteError(
            f"relevance is not finite: the checkpoint has non-finite weights (first: {bad}); "
            "restore the checkpoint's weight files"
        )
    if any(getattr(torch, d) in _LOW_PRECISION for d in dtypes):
        return NonFiniteError(
            f"relevance is not finite in {precision} (half precision overflows easily); "
            "run the model in float32 (--dtype float32)"
        )
    return NonFiniteError(
        f"relevance is not finite although the model runs in {precision}: an activation became NaN or "
        "infinite for this input; try a shorter input, and check that the checkpoint was trained and saved correctly"
    )


def check_finite(model: nn.Module, *relevance) -> None:
    """Raise :func:`non_finite_error` unless every tensor or array in ``relevance`` is finite."""
    for r in relevance:
        finite = torch.isfinite(r).all() if isinstance(r, torch.Tensor) else np.isfinite(r).all()
        if not bool(finite):
            raise non_finite_error(model)
