"""Attribution patching: a linear prediction of a whole patching sweep from 2 forward
passes and 1 backward pass.

For a site with activation ``a_base`` in the base run and ``a_source`` in the source
run, patching changes the metric by about ``(a_source - a_base) . g`` where ``g`` is
the gradient of the metric at the site in the base run. Plain attribution patching
(AtP) uses the ordinary gradient; RelP (Rezaei Jafari et al. 2025, "RelP: faithful and
efficient circuit discovery via relevance patching") uses LRP propagation coefficients
instead: the gradient of the base run under LRP rules (:func:`lrp_llm.mechanism.context.lrp_rules`).
The rule set ``"relp"`` follows the paper: norms with a constant scale (LN-rule), the
identity rule on activations and the half rule on the gated product (as in AttnLRP),
and the attention pattern held constant (AH-rule, relevance through the values only);
it is one of the family's rule sets (:mod:`lrp_llm.archs.blocks`).
``rules="attnlrp"`` (the softmax rule of AttnLRP) and ``"cp-lrp"`` are available for
comparison; on SmolLM2 the paper's set tracks the real sweep best
(``benchmarks/results/relp.md``). Mamba models use their own rules (MambaLRP).

One backward pass serves every site at once: residual stream, attention and MLP
outputs (summed over the hidden dimension per position) and heads (at the input of
``o_proj``, summed over the patched positions).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch
from torch import nn

from lrp_llm.errors import InputError
from lrp_llm.mechanism.patch import ModelPatch, freeze_parameters

from .interventions import _first
from .metrics import Reference
from .sites import SiteMap, normalise_positions, site_map
from .sweeps import SweepOutput, base_and_source, sweep_kinds

# method -> rule set of the backward pass
METHODS = {"relp": "relp", "atp": None}
RULES = ("relp", "attnlrp", "cp-lrp", None)


def _capture_modules(sm: SiteMap, kinds: Sequence[str]) -> list[tuple[str, int, nn.Module, str]]:
    """(kind, layer, module, "output"|"input") for every tensor the estimate needs (only blocks that have the kind)."""
    out = []
    for kind in kinds:
        for i in sm.layers_with(kind):
            layer = sm.layers[i]
            if kind == "resid":
                out.append((kind, i, layer, "output"))
            elif kind == "head":  # all heads of a layer at once: the whole input of the output projection
                out.append((kind, i, sm.module(i, kind), "input"))
            else:
                out.append((kind, i, sm.module(i, kind), "output"))
    return out


def _record(patch: ModelPatch, targets, store: dict) -> None:
    for kind, i, module, where in targets:
        key = (kind, i)
        if where == "output":

            def hook(_m, _args, output, key=key):
                store[key] = _first(output)

            patch.hook_output(module, hook)
        else:

            def pre(_m, args, key=key):
                store[key] = args[0]

            handle = module.register_forward_pre_hook(pre)
            patch.on_exit(handle.remove)


def backward_rules(model: nn.Module, rules: str | None) -> AbstractContextManager[ModelPatch]:
    """The rule set of the backward pass: "relp", "attnlrp", "cp-lrp" or None (plain gradient).

    "relp" is a rule set of the model's family (:mod:`lrp_llm.archs.blocks`; MambaLRP on Mamba).
    """
    from lrp_llm.mechanism.context import lrp_rules

    if rules not in RULES:
        raise InputError(f"unknown rule set '{rules}'; choose from relp, attnlrp, cp-lrp or none")
    return lrp_rules(model, rules)


def attribution_patching(
    model: nn.Module,
    clean_ids: torch.Tensor | Sequence[int],
    corrupted_ids: torch.Tensor | Sequence[int],
    answer_id: int,
    wrong_id: int,
    *,
    method: str = "relp",
    kinds: Sequence[str] = ("resid", "attn", "mlp"),
    direction: str = "denoise",
    positions: Sequence[int] | None = None,
    head_positions: Sequence[int] | None = None,
    reference: Reference | None = None,
    rules: str | None = "default",
) -> SweepOutput:
    """Predicted ``logit_diff`` and ``recovery`` of every sweep cell, shaped like :func:`sweep`'s output.

    ``method``: "relp" (LRP-modified gradient) or "atp" (plain gradient).
    """
    if method not in METHODS:
        raise InputError(f"unknown attribution-patching method '{method}'; choose relp or atp")
    base, source = base_and_source(model, clean_ids, corrupted_ids, direction)
    sm = site_map(model)
    kinds = sweep_kinds(sm, kinds)
    T = base.shape[1]
    pos = normalise_positions(positions, T)
    hpos = normalise_positions(head_positions, T)
    targets = _capture_modules(sm, kinds)
    t0 = time.perf_counter()

    # forward 1: the source run, activations only
    src: dict = {}
    with ModelPatch(model) as patch, torch.no_grad():
        _record(patch, targets, src)
        src_logits = model(input_ids=source, use_cache=False, logits_to_keep=1).logits[0, -1]

    # forward 2 + backward: the base run under the rules, gradient of the metric at every site
    got: dict = {}
    with backward_rules(model, METHODS[method] if rules == "default" else rules) as patch:
        freeze_parameters(model, patch)
        _record(patch, targets, got)
        with torch.enable_grad():
            embeds = model.get_input_embeddings()(base).detach().requires_grad_(True)
            logits = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=1).logits[0, -1]
            metric = logits[answer_id] - logits[wrong_id]
            keys = list(got)
            grads = torch.autograd.grad(metric, [got[k] for k in keys], allow_unused=True)
        base_logits = logits.detach()
    if reference is None:
        lc, lx = (src_logits, base_logits) if direction == "denoise" else (base_logits, src_logits)
        reference = Reference.from_logits(lc, lx, answer_id, wrong_id)
    base_ld = float(base_logits[answer_id] - base_logits[wrong_id])

    values: dict[tuple[str, str], np.ndarray] = {}
    acc = torch.float64
    for key, grad in zip(keys, grads):
        kind, i = key
        diff = (src[key][0] - got[key][0].detach()).to(acc)  # (T, width)
        g = torch.zeros_like(diff) if grad is None else grad[0].to(acc)
        if kind == "head":
            per = (diff * g).view(T, sm.n_heads, sm.head_dim).sum(-1)  # (T, heads)
            row = per[hpos].sum(0)
        else:
            row = (diff * g).sum(-1)[pos]
        width = sm.n_heads if kind == "head" else len(pos)
        if (kind, "logit_diff") not in values:
            values[(kind, "logit_diff")] = np.full((sm.n_layers, width), np.nan, dtype=np.float32)
        values[(kind, "logit_diff")][i] = (base_ld + row).cpu().numpy()
    for kind in kinds:
        ld = torch.from_numpy(values[(kind, "logit_diff")].astype(np.float64))
        values[(kind, "recovery")] = reference.recovery(ld).numpy().astype(np.float32)
    return SweepOutput(direction, pos, sm.n_heads, values, reference, method, time.perf_counter() - t0)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r over the cells finite in both (NaN when either is constant)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
