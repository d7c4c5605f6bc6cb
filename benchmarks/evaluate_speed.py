"""Where the time of ``xai-tui evaluate`` goes, per item and stage, on SmolLM2, and how far each stage is from
the cost of the model's own forward passes.

    .venv/bin/python -m benchmarks.evaluate_speed [--limit 8] [--methods ...] [--steps 10] [--cpu-time]

The stages are the ones :func:`lrp_llm.analyses.evaluate.evaluate` runs for each item, called one by one
in one process: answering (:func:`prepare_item`: the greedy answer), one explanation per method
(:func:`explain_prepared`) and the scoring of every method's perturbation curves
(:func:`perturbation_curves_many`: MoRF, LeRF, insertion and the ERASER sets, pooled). A forward
pre-hook on the model counts the token positions each stage runs through the model (batch x sequence);
the "floor" column is those positions at the model's measured forward throughput (a plain batched
forward of the same length, no gradients), i.e. what the stage would cost if every position it computes
ran at that speed. The seconds per item of the whole set are the sum of the stages; the last line
extrapolates them to the data file's items. Writes benchmarks/results/evaluate_speed.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from benchmarks.common import load_note, machine, write_table
from lrp_llm import load_model
from lrp_llm.analyses.evaluate import (
    check_methods,
    explain_prepared,
    load_items,
    perturbation_curves_many,
    prepare_item,
)

ISSUE_METHODS = "attnlrp,cp-lrp,integrated-gradients:16,grad-x-input,saliency,random"


class PositionCounter:
    """Counts the token positions (batch x sequence) of every forward call of a model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.positions = 0
        self._handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids", args[0] if args else None)
        if x is not None:
            self.positions += int(x.shape[0]) * int(x.shape[1])

    def take(self) -> int:
        n, self.positions = self.positions, 0
        return n

    def remove(self) -> None:
        self._handle.remove()


def forward_ms_per_position(model, length: int, batch: int = 16, repeats: int = 3) -> float:
    """The model's plain forward cost per position (ms): ``batch`` random sequences of ``length`` tokens,
    last-position logits only, best of ``repeats``."""
    ids = torch.randint(1000, 20000, (batch, length), generator=torch.Generator().manual_seed(0))
    best = float("inf")
    with torch.no_grad():
        model(input_ids=ids[:2], use_cache=False, logits_to_keep=1)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
            best = min(best, time.perf_counter() - t0)
    return 1000 * best / (batch * length)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="benchmarks/data/qa.jsonl")
    ap.add_argument("--limit", type=int, default=8, help="items measured (the first N of the file)")
    ap.add_argument("--methods", default=ISSUE_METHODS)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cpu-time", action="store_true", help="CPU seconds of this process (steadier on a busy machine)")
    args = ap.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    load_before = os.getloadavg()[0]
    model, tok = load_model()
    n_all = len(load_items(args.data))
    items = load_items(args.data, limit=args.limit)
    parsed = check_methods(model, args.methods.split(","))
    counter = PositionCounter(model)
    stages = ["answering", *(label for label, _, _ in parsed), "scoring"]
    seconds: dict[str, list[float]] = {s: [] for s in stages}
    positions: dict[str, list[int]] = {s: [] for s in stages}
    lengths: list[int] = []

    def record(stage: str, t0: float) -> None:
        seconds[stage].append(clock() - t0)
        positions[stage].append(counter.take())

    # warm-up on the first item (first calls allocate and pick kernels), not recorded
    warm = prepare_item(model, tok, items[0])
    for _, method, m_steps in parsed:
        explain_prepared(model, warm, method, ig_steps=m_steps or 32)
    counter.take()
    for index, item in enumerate(items):
        t0 = clock()
        prep = prepare_item(model, tok, item)
        record("answering", t0)
        lengths.append(len(prep.input_ids))
        explained = {}
        for label, method, m_steps in parsed:
            t0 = clock()
            explained[label], _ = explain_prepared(model, prep, method, ig_steps=m_steps or 32, seed=index)
            record(label, t0)
        t0 = clock()
        perturbation_curves_many(
            model, prep.input_ids, prep.position, explained, candidates=prep.candidates, steps=args.steps
        )
        record("scoring", t0)
        print(f"item {index + 1}/{len(items)}: {sum(s[-1] for s in seconds.values()):.2f} s", flush=True)
    counter.remove()
    ms = forward_ms_per_position(model, round(statistics.mean(lengths)))
    per_item = {s: statistics.mean(v) for s, v in seconds.items()}
    total = sum(per_item.values())
    base = per_item.get("grad-x-input")
    rows = []
    for s in stages:
        pos = statistics.mean(positions[s])
        rows.append(
            [
                s,
                f"{per_item[s]:.3f}",
                f"{100 * per_item[s] / total:.0f} %",
                "" if base is None else f"{per_item[s] / base:.2f}",
                f"{pos:.0f}",
                f"{pos * ms / 1000:.3f}",
            ]
        )
    rows.append(["**all stages**", f"**{total:.2f}**", "100 %", "", "", ""])
    minutes = total * n_all / 60
    notes = [
        f"Machine: {machine()}. Model: SmolLM2-135M-Instruct (bundled GGUF, float32). Measured "
        f"{time.strftime('%Y-%m-%d')}. Clock: "
        + ("CPU seconds of the benchmark process" if args.cpu_time else "wall time")
        + f"; {load_note(load_before, os.getloadavg()[0])}.",
        f"`{args.data}`: the first {len(items)} items ({min(lengths)}-{max(lengths)} tokens), after one warm-up "
        f"item; methods `{args.methods}`, {args.steps} removal steps per curve, the content tokens removable "
        "(the defaults of `xai-tui evaluate`).",
        "Forward positions: token positions the stage runs through the model per item (batch x sequence; a "
        "backward pass is not counted). Floor: those positions at the model's plain batched forward speed, "
        f"{ms:.2f} ms per position (16 random sequences of {round(statistics.mean(lengths))} tokens, no "
        "gradients); a gradient method's backward costs about as much again as its forward.",
        f"Whole file ({n_all} items) at these seconds per item: **{minutes:.1f} min**.",
    ]
    header = ["stage", "s / item", "share", "ratio to grad-x-input", "forward positions / item", "floor (s)"]
    write_table("evaluate_speed", "Where the time of `xai-tui evaluate` goes", header, rows, notes)


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
