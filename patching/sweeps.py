"""Activation-patching sweeps: every layer x position (resid/attn/mlp/mixer) and every
layer x head, in both directions, with logit difference, normalised recovery and KL.

A sweep patches one site of the *base* run with the value it had in the *source* run
and reads the metric at the last position. ``direction="denoise"`` (clean ->
corrupted) runs the corrupted prompt with clean activations patched in;
``direction="noise"`` (corrupted -> clean) runs the clean prompt with corrupted ones.

Three engines give the same numbers (tested against each other), one module each:
:mod:`patching.stepper` (the default where the family's blocks read keys and values),
:mod:`patching.batched` (any family) and :mod:`patching.naive` (the reference).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lrp_llm.errors import InputError, ShouldCancel

from .batched import run_batched
from .interventions import _ids_tensor, run_with_cache
from .metrics import Reference, check_metrics, logit_diff
from .naive import run_naive
from .result import DIRECTIONS, Grid
from .sites import SiteMap, normalise_positions, site_map
from .stepper import LayerStepper, StepperUnsupported, run_stepper
from .variants import EngineJob, LogitRows, Progress, make_variants

ENGINES = ("auto", "stepper", "batched", "naive")


# ---------------------------------------------------------------------- the sweep
@dataclass
class SweepOutput:
    """Raw sweep values: ``values[(kind, metric)]`` is (n_layers, n_columns)."""

    direction: str
    positions: list[int]
    n_heads: int
    values: dict[tuple[str, str], np.ndarray]
    reference: Reference
    engine: str
    seconds: float


def sweep_kinds(sm: SiteMap, kinds: Sequence[str]) -> list[str]:
    """The kinds to sweep, checked against the model's; attn/mlp read as mixer in a family that has only mixers.

    In a hybrid whose blocks mix tokens by attention in some layers and by a mixer in others,
    ``attn`` brings ``mixer`` along: the token mixing of every layer is swept.
    """
    mixes_otherwise = any(sm.has(i, "mixer") and not sm.has(i, "attn") for i in range(sm.n_layers))
    if "attn" in kinds and "attn" in sm.kinds and mixes_otherwise and "mixer" not in kinds:
        kinds = [x for k in kinds for x in ((k, "mixer") if k == "attn" else (k,))]
    out = []
    for k in kinds:
        k = (
            "mixer"
            if (k in ("attn", "mlp") and k not in sm.kinds and "mixer" in sm.kinds and "mixer" not in kinds)
            else k
        )
        if k not in sm.kinds or k in ("neuron", "channel", "expert", "shared_expert"):
            allowed = [x for x in sm.kinds if x not in ("neuron", "channel", "expert", "shared_expert")]
            raise InputError(f"cannot sweep '{k}' on a {sm.family}-family model; choose from {', '.join(allowed)}")
        if k not in out:
            out.append(k)
    return out


def check_same_length(n_clean: int, n_corrupted: int) -> None:
    """Sites are matched position by position: the two prompts need the same number of tokens."""
    if n_clean != n_corrupted:
        raise InputError(
            f"the clean and corrupted prompts must have the same number of tokens to patch position by position "
            f"(got {n_clean} and {n_corrupted}); rephrase one of them"
        )


def base_and_source(model: nn.Module, clean_ids, corrupted_ids, direction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(base, source)`` id tensors of a prompt pair: the run that is patched and the one patched from.

    denoise: clean activations into the corrupted run; noise: the reverse. Both prompts
    must have the same number of tokens (sites are matched position by position).
    """
    if direction not in DIRECTIONS:
        raise InputError(f"unknown direction '{direction}'; choose denoise (clean -> corrupted) or noise")
    clean = _ids_tensor(model, clean_ids)
    corrupted = _ids_tensor(model, corrupted_ids)
    check_same_length(clean.shape[1], corrupted.shape[1])
    return (corrupted, clean) if direction == "denoise" else (clean, corrupted)


def sweep(
    model: nn.Module,
    clean_ids: torch.Tensor | Sequence[int],
    corrupted_ids: torch.Tensor | Sequence[int],
    answer_id: int,
    wrong_id: int,
    *,
    kinds: Sequence[str] = ("resid", "attn", "mlp"),
    direction: str = "denoise",
    positions: Sequence[int] | None = None,
    head_positions: Sequence[int] | None = None,
    metrics: Sequence[str] = ("logit_diff", "recovery", "kl"),
    engine: str = "auto",
    max_tokens: int = 8192,
    naive_logits_to_keep: int = 0,
    reference: Reference | None = None,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> SweepOutput:
    """Patch every (layer, position) of ``kinds`` (and every (layer, head) for ``"head"``).

    ``positions``: the columns of position sweeps (default all); ``head_positions``: the
    positions a head is patched at (default all). Prompts must have the same length.
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine '{engine}'; choose from {', '.join(ENGINES)}")
    base, source = base_and_source(model, clean_ids, corrupted_ids, direction)
    clean, corrupted = (source, base) if direction == "denoise" else (base, source)
    metrics = check_metrics(metrics)
    sm = site_map(model)
    kinds = sweep_kinds(sm, kinds)
    T = base.shape[1]
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if reference is None:
                lc = model(input_ids=clean, use_cache=False, logits_to_keep=1).logits[0, -1]
                lx = model(input_ids=corrupted, use_cache=False, logits_to_keep=1).logits[0, -1]
                reference = Reference.from_logits(lc, lx, answer_id, wrong_id)
            cache_sites = [("head" if k == "head" else f"layer.*.{k}") for k in kinds]
            _, cache = run_with_cache(model, source, cache_sites)
            variants = make_variants(sm, kinds, T, positions, head_positions)
            full = "kl" in metrics
            job = EngineJob(
                model, sm, base, variants, cache, answer_id, wrong_id, full, max_tokens, naive_logits_to_keep,
                progress, should_cancel,
            )  # fmt: skip
            logits, used = run_engine(job, engine)
    finally:
        model.train(was_training)
    pos = normalise_positions(positions, T)
    col = {p: c for c, p in enumerate(pos)}
    values: dict[tuple[str, str], np.ndarray] = {}
    ld = logit_diff(logits, 0, 1) if not full else logit_diff(logits, answer_id, wrong_id)
    per_metric = {"logit_diff": ld, "recovery": reference.recovery(ld)}
    if full:
        per_metric["kl"] = reference.kl(logits)
    for kind in kinds:
        width = sm.n_heads if kind == "head" else len(pos)
        for m in metrics:
            values[(kind, m)] = np.full((sm.n_layers, width), np.nan, dtype=np.float32)
    for r, v in enumerate(variants):
        c = v.head if v.kind == "head" else col[v.positions[0]]
        for m in metrics:
            values[(v.kind, m)][v.layer, c] = float(per_metric[m][r])
    return SweepOutput(direction, pos, sm.n_heads, values, reference, used, time.perf_counter() - t0)


def run_engine(job: EngineJob, engine: str) -> tuple[torch.Tensor, str]:
    """(n_variants, vocab or 2) last-position logits of ``job``'s variants, and the engine that ran.

    ``auto`` takes the stepper where it reproduces the model's forward, else ``batched``.
    """
    rows = LogitRows(job)
    if engine in ("auto", "stepper"):
        try:
            stepper = LayerStepper(job.model, job.base, job.sites, job.answer_id, job.wrong_id)
            stepper.verify()
        except StepperUnsupported:
            if engine == "stepper":
                raise
            engine = "batched"
        else:
            run_stepper(job, stepper, rows)
            return rows.stacked(), "stepper"
    if engine == "batched":
        run_batched(job, rows)
    else:
        run_naive(job, rows)
    return rows.stacked(), engine


# ----------------------------------------------------------------------- to grids
def sweep_grids(out: SweepOutput, sm_layers: int, tokens: Sequence[str] | None, method: str = "sweep") -> list[Grid]:
    grids = []
    for (kind, metric), values in out.values.items():
        if kind == "head":
            rows = [f"layer.{i}.attn" for i in range(sm_layers)]
            cols = [f"head.{h}" for h in range(out.n_heads)]
            positions = None
        else:
            rows = [f"layer.{i}.{kind}" for i in range(sm_layers)]
            cols = [tokens[p] if tokens is not None else str(p) for p in out.positions]
            positions = list(out.positions)
        grids.append(Grid(kind, method, out.direction, metric, rows, cols, values, positions))
    return grids
