"""Interventions on the experts of mixture-of-experts blocks.

A routed expert's contribution to the MoE output is ``w * E(x)`` summed over the tokens routed
to it, formed inside the experts module's forward (whatever kernel transformers runs). It is
edited where it enters: the routing weight ``w`` of that expert, in the experts module's
arguments (``hidden_states``, ``top_k_index``, ``top_k_weights``). ``zero`` sets it to 0 and
``scale`` multiplies it, which zeroes or scales exactly that expert's contribution at the
chosen positions and leaves the other experts' (no renormalisation). Other operations would
need the contribution's value and are refused with a one-line error.

Llama-4's router scores scale the experts' input instead: there ``zero`` sets the expert's score to 0
at the chosen positions (its input is 0 there and, without a bias, so is its output); ``scale`` would
not scale its output (the expert is not linear) and is refused.

A shared expert is a module whose output the MoE block adds (Qwen2-MoE: through a sigmoid
gate, which scales it); some blocks run it on the flattened tokens (tokens, width). Its edits
and captures read the (batch, pos) of the MoE block's input, so every operation works on it
position by position as on any other site.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lrp_llm.archs.description import resolve
from lrp_llm.archs.experts import is_input_scaled_experts
from lrp_llm.errors import InputError
from lrp_llm.mechanism.patch import ModelPatch

from .sites import Site, SiteMap, normalise_positions

ROUTED_OPS = ("zero", "scale")


def _token_factors(edits: Sequence[Any], index: torch.Tensor, weights: torch.Tensor, shape: tuple[int, int]):
    """The routing weights (tokens, k) with each edit's expert zeroed or scaled at its rows and positions."""
    b, s = shape
    factor = torch.ones_like(weights)
    for edit in edits:
        rows = normalise_positions(edit.batch, b, what="batch row")
        pos = normalise_positions(edit.positions, s)
        tokens = torch.tensor([r * s + p for r in rows for p in pos], device=index.device, dtype=torch.long)
        chosen = torch.zeros_like(index, dtype=torch.bool)
        chosen[tokens] = index[tokens] == int(edit.site.index)
        value = 0.0 if edit.op == "zero" else float(edit.value)
        factor = torch.where(chosen, torch.full_like(factor, value), factor)
    return weights * factor


def _input_scaled(sm: SiteMap, layer: int) -> bool:
    """Whether block ``layer``'s router scores scale its experts' input (Llama-4), not their output."""
    return is_input_scaled_experts(sm.module(layer, "expert"))


def _router(sm: SiteMap, layer: int) -> torch.nn.Module:
    """The router beside the experts of block ``layer`` (Llama-4: ``feed_forward.router``)."""
    block = resolve(sm.layers[layer], sm.blocks.experts.rpartition(".")[0])
    return block.router


def _zero_scores(edits: Sequence[Any], output: tuple, shape: dict[str, tuple[int, int]]) -> tuple:
    """A Llama-4 router's output (scores (tokens, experts), logits) with each edit's expert's score 0 at its rows
    and positions: that expert's input is 0 there and, without a bias, so is its output (its contribution)."""
    scores, *rest = output
    b, s = shape.get("bs", (1, scores.shape[0]))
    keep = torch.ones_like(scores)
    for edit in edits:
        rows = normalise_positions(edit.batch, b, what="batch row")
        pos = normalise_positions(edit.positions, s)
        tokens = torch.tensor([r * s + p for r in rows for p in pos], device=scores.device, dtype=torch.long)
        keep[tokens, int(edit.site.index)] = 0
    return (scores * keep, *rest)


def install_expert_edits(
    patch: ModelPatch,
    sm: SiteMap,
    edits: Sequence[Any],
    capture: Sequence[Site],
    store: dict[str, torch.Tensor],
    keep_grad: bool,
) -> None:
    """Install ``edits`` (at routed or shared experts) and the captures of shared experts on ``patch``."""
    from .interventions import edit_site_tensor

    for edit in edits:
        if edit.site.kind == "expert" and edit.op not in ROUTED_OPS:
            raise InputError(
                f"site '{edit.site.name}': a routed expert's contribution can be zeroed or scaled (its routing "
                f"weight), not '{edit.op}'"
            )
    for edit in edits:
        if edit.site.kind == "expert" and edit.op != "zero" and _input_scaled(sm, edit.site.layer):
            raise InputError(
                f"site '{edit.site.name}': this model's router scores scale the experts' input (Llama-4), not their "
                "output: a routed expert can be zeroed here (its score), not scaled"
            )
    for c in capture:
        if c.kind == "expert":
            raise InputError(
                f"site '{c.name}': a routed expert's contribution exists only inside the experts' forward and "
                "cannot be captured; read its relevance with components=True"
            )
    layers = sorted({e.site.layer for e in edits} | {c.layer for c in capture})
    for layer in layers:
        shape: dict[str, tuple[int, int]] = {}

        def block_shape(_module, args, kwargs, shape=shape):
            x = args[0] if args else next(iter(kwargs.values()))
            shape["bs"] = (x.shape[0], x.shape[1]) if x.dim() == 3 else (1, x.shape[0])
            return None

        # the MoE block's input, or where the block has no "mlp" site (Granite-4 hybrid) the whole block's
        shaped = sm.module(layer, "mlp") if sm.has(layer, "mlp") else sm.layers[layer]
        handle = shaped.register_forward_pre_hook(block_shape, with_kwargs=True)
        patch.on_exit(handle.remove)
        routed = [e for e in edits if e.site.kind == "expert" and e.site.layer == layer]
        if routed:

            def route(_module, args, kwargs, routed=routed, shape=shape):
                names = ("hidden_states", "top_k_index", "top_k_weights")
                values = dict(zip(names, args))
                values.update(kwargs)
                hidden, index, weights = (values[n] for n in names)
                new = _token_factors(routed, index, weights, shape.get("bs", (1, hidden.shape[0])))
                return (hidden, index, new), {k: v for k, v in kwargs.items() if k not in names}

            if _input_scaled(sm, layer):  # Llama-4: the expert's score (its input's scale) set to 0 at the tokens
                handle = _router(sm, layer).register_forward_hook(
                    lambda _m, _a, out, routed=routed, shape=shape: _zero_scores(routed, out, shape)
                )
            else:
                handle = sm.module(layer, "expert").register_forward_pre_hook(route, with_kwargs=True)
            patch.on_exit(handle.remove)
        shared = [e for e in edits if e.site.kind == "shared_expert" and e.site.layer == layer]
        names = [c.name for c in capture if c.kind == "shared_expert" and c.layer == layer]
        if shared or names:

            def edit_shared(_module, _args, output, shared=shared, names=names, shape=shape):
                t = output[0] if isinstance(output, tuple) else output
                flat = t.dim() == 2
                x = t.view(*shape.get("bs", (1, t.shape[0])), t.shape[-1]) if flat else t
                for edit in shared:
                    x = edit_site_tensor(x, edit)
                for name in names:
                    store[name] = x if keep_grad else x.detach()
                new = x.reshape(t.shape) if flat else x
                return (new, *output[1:]) if isinstance(output, tuple) else new

            patch.hook_output(sm.module(layer, "shared_expert"), edit_shared)


__all__ = ["ROUTED_OPS", "install_expert_edits"]
