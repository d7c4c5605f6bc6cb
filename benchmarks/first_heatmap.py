"""Time to the first heatmap in the app, on SmolLM2-135M-Instruct, after the answer is generated.

    .venv/bin/python -m benchmarks.first_heatmap [--repeats 3] [--answer 20] [--cpu-time]

Before: the app coloured nothing until every answer token was explained (the whole
``explain``). Now: the first answer token's relevance is handed over (``on_target``) after
one forward pass and a backward pass of that token alone; the others follow in batched
backward passes. The bound is one forward + one backward of the whole sequence (its last
answer token explained alone). Same prompt, answer and method in one
process, alternating, best of ``--repeats``. Writes benchmarks/results/first_heatmap.md.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks.common import load_note, machine, write_table
from lrp_llm import load_model
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.engines.explain import explain
from lrp_llm.engines.generation import build_prompt_ids, generate_greedy

CONTEXT = (
    "The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in the 10th and 11th "
    "centuries gave their name to Normandy, a region in France."
)
QUESTION = "In what country is Normandy located? Answer in one sentence."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--answer", type=int, default=20)
    ap.add_argument("--cpu-time", action="store_true", help="CPU seconds of this process (steadier on a busy machine)")
    args = ap.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    load_before = os.getloadavg()[0]
    model, tok = load_model()
    prompt = build_prompt_ids(tok, QUESTION, CONTEXT, chat=True)
    answer = generate_greedy(model, prompt, args.answer, stop=None)
    rows = []
    for method in ("attnlrp", "cp-lrp", "grad-x-input"):
        before, first, total, bound = [], [], [], []
        for _ in range(args.repeats):
            t0 = clock()
            explain(model, tok, prompt_ids=prompt, answer_ids=answer, method=method)
            before.append(clock() - t0)

            seen: list[float] = []
            t0 = clock()
            explain(
                model,
                tok,
                prompt_ids=prompt,
                answer_ids=answer,
                method=method,
                on_target=lambda i, t, t0=t0, seen=seen: seen.append(clock() - t0) if i == 0 else None,
            )
            total.append(clock() - t0)
            first.append(seen[0])

            t0 = clock()  # the whole sequence, one target: one forward and one backward pass
            relevance(model, prompt + answer, [len(prompt) + len(answer) - 1], method=method)
            bound.append(clock() - t0)
        b, f, t, o = min(before), min(first), min(total), min(bound)
        rows.append(
            [
                method,
                f"{b:.3f}",
                f"{f:.3f}",
                f"**{f / b:.2f}**",
                f"{o:.3f}",
                f"**{f / o:.2f}**",
                f"{t:.3f}",
                f"{t / b:.2f}",
            ]
        )
        print(rows[-1], flush=True)
    notes = [
        f"Machine: {machine()}. Model: SmolLM2-135M-Instruct (bundled GGUF, float32). Measured "
        f"{time.strftime('%Y-%m-%d')}; best of {args.repeats}. Clock: "
        + ("CPU seconds of the benchmark process (other jobs shared the machine)" if args.cpu_time else "wall time")
        + f"; {load_note(load_before, os.getloadavg()[0])}.",
        f"The Normandy question in SmolLM2's chat template ({len(prompt)} tokens) and a {len(answer)}-token greedy "
        "answer; times start after generation.",
        "before: the whole explanation (the app showed nothing until it ended). first heatmap: until the first "
        "answer token's relevance is handed over. bound: one forward + one backward of the whole sequence "
        "(its last answer token explained alone, `relevance`; target: first / bound about 1). all, streaming: the whole "
        "explanation when the first token gets its own backward pass.",
    ]
    header = [
        "method",
        "before: first heatmap = all (s)",
        "now: first heatmap (s)",
        "now / before",
        "bound: 1 forward + 1 backward (s)",
        "now / bound",
        "all, streaming (s)",
        "all streaming / all before",
    ]
    write_table("first_heatmap", "Time to the first heatmap after the answer is generated", header, rows, notes)


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
