"""How well attribution patching predicts the real patching sweep on SmolLM2.

    .venv/bin/python -m benchmarks.relp

For factual-recall prompt pairs (clean / corrupted differ in the subject; metric: logit
difference of the two cities at the last position), the real sweep over every layer x
position of the residual stream, attention and MLP outputs (both directions), and the
linear predictions from 2 forward + 1 backward passes: RelP with the paper's rules
(LN-rule, identity and half rules in the MLP, attention pattern constant), RelP with
AttnLRP's rules and with CP-LRP's, and plain gradient attribution patching (AtP).
Pearson r over all cells of each grid. Writes benchmarks/results/relp.md.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date

import numpy as np

from benchmarks.common import load_note, machine, write_table
from lrp_llm import load_model
from patching import attribution_patching, pearson, sweep

PAIRS = [
    ("The Eiffel Tower is located in the city of", "The Colosseum is located in the city of", " Paris", " Rome"),
    (
        "The Statue of Liberty is located in the city of",
        "The Golden Gate Bridge is located in the city of",
        " New",
        " San",
    ),
    ("The capital of France is", "The capital of Italy is", " Paris", " Rome"),
]
KINDS = ("resid", "attn", "mlp")
ESTIMATES = [("relp", "relp", "RelP (paper rules)"), ("relp", "attnlrp", "RelP, AttnLRP rules"),
             ("relp", "cp-lrp", "RelP, CP-LRP rules"), ("atp", None, "AtP (gradient)")]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=len(PAIRS), help="how many of the prompt pairs (default all)")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    model, tok = load_model()
    rows: list[list[str]] = []
    per_est: dict[tuple[str, str], list[float]] = {}
    times: dict[str, float] = {"sweep": 0.0, "relp": 0.0}
    for clean, corrupted, answer, wrong in PAIRS[: args.pairs]:
        c, x = tok(clean)["input_ids"], tok(corrupted)["input_ids"]
        a, w = tok(answer)["input_ids"][0], tok(wrong)["input_ids"][0]
        assert len(c) == len(x), (clean, corrupted)
        for direction in ("denoise", "noise"):
            t0 = time.perf_counter()
            real = sweep(model, c, x, a, w, kinds=KINDS, direction=direction, metrics=("logit_diff",))
            times["sweep"] += time.perf_counter() - t0
            rs: dict[str, list[float]] = {}
            for method, rules, label in ESTIMATES:
                t0 = time.perf_counter()
                est = attribution_patching(
                    model, c, x, a, w, method=method, rules=rules, kinds=KINDS, direction=direction
                )
                if label.startswith("RelP (paper"):
                    times["relp"] += time.perf_counter() - t0
                rs[label] = [pearson(est.values[(k, "logit_diff")], real.values[(k, "logit_diff")]) for k in KINDS]
                for k, r in zip(KINDS, rs[label]):
                    per_est.setdefault((label, k), []).append(r)
            for i, k in enumerate(KINDS):
                rows.append(
                    [f"{clean} / {corrupted.split(' is ')[0]}", direction, k]
                    + [f"{rs[label][i]:.3f}" for _, _, label in ESTIMATES]
                )
            print(rows[-3:])
    for k in KINDS:
        rows.append(
            ["**mean**", "both", f"**{k}**"] + [f"**{np.mean(per_est[(label, k)]):.3f}**" for _, _, label in ESTIMATES]
        )
    notes = [
        f"Machine: {machine()}; {load_note(load_before, os.getloadavg()[0])}. Measured {date.today().isoformat()}. Model: SmolLM2-135M-Instruct "
        "(bundled GGUF, float32).",
        "Real sweep: every layer x position of the residual stream after each block, the attention output and the "
        "MLP output, patched one at a time (`patching.sweep`); metric: logit(answer) - logit(wrong) at the last "
        "position. denoise = clean activation into the corrupted run, noise = the reverse.",
        "Estimates: (a_source - a_base) . coefficient at every site from 2 forward passes + 1 backward pass "
        "(`patching.attribution_patching`). Pearson r over all cells of each 30 x T grid (cells where the prompts "
        "agree are 0 in both and count too).",
        f"Cost: real sweeps {times['sweep']:.0f} s in all, RelP {times['relp']:.0f} s in all "
        f"({2 * min(args.pairs, len(PAIRS))} prompt pairs x directions, 3 sites each).",
    ]
    write_table(
        "relp",
        "Attribution patching vs the real sweep (Pearson r), SmolLM2, factual recall",
        ["prompt pair (clean / corrupted subject)", "direction", "site"] + [label for _, _, label in ESTIMATES],
        rows,
        notes,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
