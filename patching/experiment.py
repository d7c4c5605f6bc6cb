"""One patching experiment from text: sweeps and/or attribution patching over the sites
asked for, in the directions asked for, as one :class:`PatchingResult`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import torch
from torch import nn

from lrp_llm.errors import InputError

from .metrics import Reference, check_metrics
from .relp import attribution_patching, pearson
from .result import DIRECTIONS, PatchingResult
from .sites import site_map
from .sweeps import ShouldCancel, _kinds, make_variants, sweep, sweep_grids

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
    kinds = _kinds(sm, sites)
    t0 = time.perf_counter()
    clean_ids = prompt_ids(tokenizer, clean, "clean", chat=chat) if isinstance(clean, str) else list(clean)
    corrupted_ids = (
        prompt_ids(tokenizer, corrupted, "corrupted", chat=chat) if isinstance(corrupted, str) else list(corrupted)
    )
    if len(clean_ids) != len(corrupted_ids):
        raise InputError(
            f"the clean and corrupted prompts must have the same number of tokens to patch position by position "
            f"(got {len(clean_ids)} and {len(corrupted_ids)}); rephrase one of them"
        )
    answer_id = answer if isinstance(answer, int) else answer_token(tokenizer, answer, "answer")
    wrong_id = wrong if isinstance(wrong, int) else answer_token(tokenizer, wrong, "wrong")
    if answer_id == wrong_id:
        raise InputError(
            "--answer and --wrong start with the same token; pick two answers that differ in their first token"
        )

    from lrp_llm.engines.generation import input_device, token_strings

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
    # Column labels: the base run's tokens (equal where the prompts agree); "a/b" where they differ.
    labels = [a if a == b else f"{a}/{b}" for a, b in zip(result.clean_tokens, result.corrupted_tokens)]
    T = len(clean_ids)
    n_variants = len(make_variants(sm, kinds, T, positions, None))
    engines: dict[str, str] = {}
    for direction in directions:
        sweep_out = None
        if method in ("sweep", "both"):
            stage = f"sweep {direction}"

            def on_progress(done: int, total: int, stage=stage) -> None:
                if progress is not None:
                    progress(stage, done, total)

            on_progress(0, n_variants)
            sweep_out = sweep(
                model, clean_ids, corrupted_ids, answer_id, wrong_id, kinds=kinds, direction=direction,
                positions=positions, metrics=metrics, engine=engine, reference=reference,
                progress=on_progress, should_cancel=should_cancel,
            )  # fmt: skip
            engines[direction] = sweep_out.engine
            result.timings[stage] = sweep_out.seconds
            result.grids += sweep_grids(sweep_out, sm.n_layers, labels, "sweep")
        if method in ("relp", "both"):
            for est in ("relp", "atp"):
                stage = f"{est} {direction}"
                if progress is not None:
                    progress(stage, 0, 1)
                if should_cancel is not None and should_cancel():
                    from lrp_llm.errors import Cancelled

                    raise Cancelled()
                est_out = attribution_patching(
                    model, clean_ids, corrupted_ids, answer_id, wrong_id, method=est, kinds=kinds,
                    direction=direction, positions=positions, reference=reference,
                )  # fmt: skip
                result.timings[stage] = est_out.seconds
                result.grids += sweep_grids(est_out, sm.n_layers, labels, est)
                if progress is not None:
                    progress(stage, 1, 1)
                if sweep_out is not None:
                    for kind in kinds:
                        result.correlations.append(
                            {
                                "kind": kind,
                                "direction": direction,
                                "method": est,
                                "metric": "logit_diff",
                                "pearson_r": pearson(
                                    est_out.values[(kind, "logit_diff")], sweep_out.values[(kind, "logit_diff")]
                                ),
                            }
                        )
    result.seconds = time.perf_counter() - t0
    result.meta = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sites": list(kinds),
        "method": method,
        "directions": list(directions),
        "metrics": list(metrics),
        "engine": engines,
        "family": sm.family,
        "positions": None if positions is None else [int(p) for p in positions],
    }
    return result
