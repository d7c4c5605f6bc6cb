"""Cost of component relevance: ``explain(..., components=True)`` against the plain explanation, on SmolLM2.

    .venv/bin/python -m benchmarks.components_speed [--repeats 5] [--answer 10] [--cpu-time] [--full]

The same prompt, answer and method (AttnLRP) in one process, the two variants alternating,
median of ``--repeats``. Component relevance adds taps (identity views) on every block output,
attention and MLP output, the heads at o_proj's input and the neurons at down_proj's input;
their gradients come from the same backward passes as the input relevance, so the extra cost is
the hooks, the larger ``autograd.grad`` outputs and the per-chunk reductions. Goal: ratio <= 1.2.
``--full`` also keeps every neuron and every head per position. Writes
benchmarks/results/components_speed.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from benchmarks.common import load_note, machine, write_table
from benchmarks.first_heatmap import CONTEXT, QUESTION  # the same QA prompt as the first-heatmap benchmark
from lrp_llm import load_model
from lrp_llm.engines.explain import explain
from lrp_llm.engines.generation import build_prompt_ids, generate_greedy
from lrp_llm.mechanism.components import ComponentSpec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--answer", type=int, default=10)
    ap.add_argument("--cpu-time", action="store_true", help="CPU seconds of this process (steadier on a busy machine)")
    ap.add_argument("--full", action="store_true", help="also measure ComponentSpec(full=True)")
    args = ap.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    load_before = os.getloadavg()[0]
    model, tok = load_model()
    prompt = build_prompt_ids(tok, QUESTION, CONTEXT, chat=True)
    answer = generate_greedy(model, prompt, args.answer, stop=None)
    variants: dict[str, bool | ComponentSpec] = {"plain": False, "components=True": True}
    if args.full:
        variants["components, full"] = ComponentSpec(full=True)
    times: dict[str, list[float]] = {name: [] for name in variants}
    explain(model, tok, prompt_ids=prompt, answer_ids=answer, method="attnlrp", components=True)  # warm-up
    for _ in range(args.repeats):
        for name, components in variants.items():
            t0 = clock()
            explain(model, tok, prompt_ids=prompt, answer_ids=answer, method="attnlrp", components=components)
            times[name].append(clock() - t0)
    base = statistics.median(times["plain"])
    rows = []
    for name, ts in times.items():
        m = statistics.median(ts)
        rows.append([name, f"{m:.3f}", f"{min(ts):.3f}", f"**{m / base:.2f}**"])
        print(rows[-1], flush=True)
    notes = [
        f"Machine: {machine()}. Model: SmolLM2-135M-Instruct (bundled GGUF, float32), AttnLRP. Measured "
        f"{time.strftime('%Y-%m-%d')}; median of {args.repeats}, variants alternating in one process. Clock: "
        + ("CPU seconds of the benchmark process (other jobs shared the machine)" if args.cpu_time else "wall time")
        + f"; {load_note(load_before, os.getloadavg()[0])}.",
        f"The Normandy question in SmolLM2's chat template ({len(prompt)} tokens) and a {len(answer)}-token greedy "
        "answer, every answer token explained; times start after generation.",
        "components=True: relevance trace (30 layers + embedding x positions), attention / MLP totals, 30 x 9 heads, "
        "top-16 of 1536 neurons per layer, per answer token, from the same backward passes (goal: ratio <= 1.2).",
    ]
    header = ["variant", "median (s)", "best (s)", "ratio to plain"]
    write_table("components_speed", "Cost of component relevance (explain, components=True)", header, rows, notes)


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
