"""One patching experiment from text: sweeps and/or attribution patching over the sites
asked for, in the directions asked for, as one :class:`PatchingResult`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lrp_llm.errors import InputError, ShouldCancel, check_cancel
from lrp_llm.results.base import run_meta

from .metrics import Reference, check_metrics
from .relp import attribution_patching, pearson
from .result import DIRECTIONS, PatchingResult
from .sites import SiteMap, site_map
from .sweeps import SweepOutput, check_same_length, sweep, sweep_grids, sweep_kinds
from .variants import make_variants

METHODS = ("sweep", "relp", "both")
# progress(stage, done, total); stage is e.g. "sweep denoise" or "relp noise"
StageProgress = Callable[[str, int, int], None]


def answer_token(tokenizer, text: str, what: str) -> int:
    """The first token of ``text`` as the model would write it after the prompt."""
    if not text:
        raise InputError(f"--{what} is empty; pass the token text, usually with its leading space (' Paris')")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputError(f"--{what} '{text}' gives no token")
    return int(ids[0])


def prompt_ids(tokenizer, text: str, what: str, *, chat: bool = False) -> list[int]:
    from lrp_llm.engines.generation import build_prompt_ids

    if not text or not text.strip():
        raise InputError(f"the {what} prompt is empty; pass some text with --{what}")
    return build_prompt_ids(tokenizer, text, chat=chat)


def check_context(model: nn.Module, n_tokens: int) -> None:
    """Refuse prompts longer than the model's context before any forward pass (as explain does):
    beyond it the positions are ones the model never saw, and a huge prompt would run for minutes."""
    from lrp_llm.engines.generation import context_length

    limit = context_length(model)
    if limit is not None and n_tokens > limit:
        raise InputError(
            f"the prompts have {n_tokens} tokens but the model's context is {limit}; shorten --clean and --corrupted"
        )


@dataclass(frozen=True)
class _Experiment:
    """One prompt pair, its answer tokens and the options every stage of :func:`run_patching` reads."""

    model: nn.Module
    sites: SiteMap
    kinds: list[str]
    clean_ids: list[int]
    corrupted_ids: list[int]
    answer_id: int
    wrong_id: int
    reference: Reference
    metrics: tuple[str, ...]
    positions: Sequence[int] | None
    engine: str
    labels: list[str]  # column labels: the base run's tokens, "a/b" where the prompts differ
    progress: StageProgress | None
    should_cancel: ShouldCancel | None

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)


def run_patching(
    model: nn.Module,
    tokenizer,
    clean: str | Sequence[int],
    corrupted: str | Sequence[int],
    answer: str | int,
    wrong: str | int,
    *,
    sites: Sequence[str] = ("resid", "attn", "mlp"),
    method: str = "both",
    directions: Sequence[str] = ("denoise",),
    metrics: Sequence[str] = ("logit_diff", "recovery", "kl"),
    positions: Sequence[int] | None = None,
    engine: str = "auto",
    chat: bool = False,
    model_name: str | None = None,
    progress: StageProgress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> PatchingResult:
    """Patch ``sites`` (resid, attn, mlp, mixer, head) between the clean and corrupted prompt.

    ``method``: "sweep" (real patching), "relp" (RelP and plain attribution patching) or
    "both" (and their Pearson correlation with the sweep). ``answer``/``wrong``: the
    token the clean prompt should produce and the one the corrupted prompt pushes to.
    """
    if method not in METHODS:
        raise InputError(f"unknown method '{method}'; choose sweep, relp or both")
    for d in directions:
        if d not in DIRECTIONS:
            raise InputError(f"unknown direction '{d}'; choose denoise (clean -> corrupted) or noise")
    metrics = check_metrics(metrics)
    sm = site_map(model)
    kinds = sweep_kinds(sm, sites)
    t0 = time.perf_counter()
    clean_ids = prompt_ids(tokenizer, clean, "clean", chat=chat) if isinstance(clean, str) else list(clean)
    corrupted_ids = (
        prompt_ids(tokenizer, corrupted, "corrupted", chat=chat) if isinstance(corrupted, str) else list(corrupted)
    )
    check_same_length(len(clean_ids), len(corrupted_ids))
    check_context(model, len(clean_ids))
    answer_id = answer if isinstance(answer, int) else answer_token(tokenizer, answer, "answer")
    wrong_id = wrong if isinstance(wrong, int) else answer_token(tokenizer, wrong, "wrong")
    if answer_id == wrong_id:
        raise InputError(
            "--answer and --wrong start with the same token; pick two answers that differ in their first token"
        )

    from lrp_llm.engines.generation import input_device, token_strings

    reference, baseline = _baseline(model, clean_ids, corrupted_ids, answer_id, wrong_id)
    result = PatchingResult(
        model=model_name or str(getattr(model, "name_or_path", type(model).__name__)),
        clean_tokens=token_strings(tokenizer, clean_ids),
        corrupted_tokens=token_strings(tokenizer, corrupted_ids),
        clean_ids=clean_ids,
        corrupted_ids=corrupted_ids,
        answer=tokenizer.decode([answer_id]),
        wrong=tokenizer.decode([wrong_id]),
        answer_id=answer_id,
        wrong_id=wrong_id,
        baseline=baseline,
    )
    labels = [a if a == b else f"{a}/{b}" for a, b in zip(result.clean_tokens, result.corrupted_tokens)]
    exp = _Experiment(
        model, sm, kinds, clean_ids, corrupted_ids, answer_id, wrong_id, reference, metrics, positions, engine,
        labels, progress, should_cancel,
    )  # fmt: skip
    engines: dict[str, str] = {}
    for direction in directions:
        sweep_out = None
        if method in ("sweep", "both"):
            sweep_out = _sweep_stage(exp, direction, result)
            engines[direction] = sweep_out.engine
        if method in ("relp", "both"):
            for estimator in ("relp", "atp"):
                _estimate_stage(exp, direction, estimator, sweep_out, result)
    result.seconds = time.perf_counter() - t0
    result.meta = {
        **run_meta("patching", method=method, dtype=next(model.parameters()).dtype, device=input_device(model)),
        "sites": list(kinds),
        "directions": list(directions),
        "metrics": list(metrics),
        "engine": engines,
        "family": sm.family,
        # hybrids: the layers whose blocks lack a swept kind (their grid rows are null)
        "absent": {
            k: [i for i in range(sm.n_layers) if not sm.has(i, k)]
            for k in kinds
            if sm.layers_with(k) != list(range(sm.n_layers))
        },
        "positions": None if positions is None else [int(p) for p in positions],
    }
    return result


def _baseline(
    model: nn.Module, clean_ids: list[int], corrupted_ids: list[int], answer_id: int, wrong_id: int
) -> tuple[Reference, dict[str, dict[str, float]]]:
    """The reference of the recovery metric and each prompt's unpatched logit difference, probabilities and KL."""
    from lrp_llm.engines.generation import input_device

    device = input_device(model)
    with torch.no_grad():
        lc = model(input_ids=torch.tensor([clean_ids], device=device), use_cache=False, logits_to_keep=1).logits[0, -1]
        lx = model(input_ids=torch.tensor([corrupted_ids], device=device), use_cache=False, logits_to_keep=1).logits[
            0, -1
        ]
    reference = Reference.from_logits(lc, lx, answer_id, wrong_id)
    baseline = {}
    for name, lg in (("clean", lc), ("corrupted", lx)):
        p = torch.softmax(lg.double(), -1)
        baseline[name] = {
            "logit_diff": float(lg[answer_id] - lg[wrong_id]),
            "p_answer": float(p[answer_id]),
            "p_wrong": float(p[wrong_id]),
            "kl": float(reference.kl(lg[None])[0]),  # from the clean run
        }
    return reference, baseline


def _sweep_stage(exp: _Experiment, direction: str, result: PatchingResult) -> SweepOutput:
    stage = f"sweep {direction}"

    def on_progress(done: int, total: int) -> None:
        exp.report(stage, done, total)

    on_progress(0, len(make_variants(exp.sites, exp.kinds, len(exp.clean_ids), exp.positions, None)))
    out = sweep(
        exp.model, exp.clean_ids, exp.corrupted_ids, exp.answer_id, exp.wrong_id, kinds=exp.kinds,
        direction=direction, positions=exp.positions, metrics=exp.metrics, engine=exp.engine,
        reference=exp.reference, progress=on_progress, should_cancel=exp.should_cancel,
    )  # fmt: skip
    result.timings[stage] = out.seconds
    result.grids += sweep_grids(out, exp.sites.n_layers, exp.labels, "sweep")
    return out


def _estimate_stage(
    exp: _Experiment, direction: str, estimator: str, sweep_out: SweepOutput | None, result: PatchingResult
) -> None:
    """Attribution patching (``estimator``: relp or atp), and its correlation with the sweep when there is one."""
    stage = f"{estimator} {direction}"
    exp.report(stage, 0, 1)
    check_cancel(exp.should_cancel)
    out = attribution_patching(
        exp.model, exp.clean_ids, exp.corrupted_ids, exp.answer_id, exp.wrong_id, method=estimator,
        kinds=exp.kinds, direction=direction, positions=exp.positions, reference=exp.reference,
    )  # fmt: skip
    result.timings[stage] = out.seconds
    result.grids += sweep_grids(out, exp.sites.n_layers, exp.labels, estimator)
    exp.report(stage, 1, 1)
    if sweep_out is None:
        return
    for kind in exp.kinds:
        r = pearson(out.values[(kind, "logit_diff")], sweep_out.values[(kind, "logit_diff")])
        result.correlations.append(
            {"kind": kind, "direction": direction, "method": estimator, "metric": "logit_diff", "pearson_r": r}
        )
