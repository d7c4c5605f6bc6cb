"""A full layer x position activation-patching sweep on SmolLM2: the layer stepper
against the naive sweep (one full forward per patched site), same prompts, one process.

    .venv/bin/python -m benchmarks.patching_speed [--kinds resid] [--positions N] [--naive-every K] [--skip-naive]

The naive sweep is what one writes with hooks: for every (layer, position) one forward
pass of the whole prompt with the clean activation patched in, all logits computed
(``patching.sweep(engine="naive")``, through the public ``intervene`` API). The stepper
(the default engine) batches the variants, starts each at its layer from the recorded
base run, computes only positions from the patched one on (reusing the recorded keys
and values before it) and the two answer logits at the last position. The batched
engine (variants as a batch through the whole model) is shown beside them. The stepper
runs before and after the naive sweep; its mean time is used (the machine is shared).
``--naive-every K`` runs the naive sweep on every K-th position only (all layers) and
scales its time by the number of variants: each naive variant is the same full forward
pass, so its cost per variant does not depend on the position; results are compared on
those cells.
Writes benchmarks/results/patching_speed.md.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date

import numpy as np

from benchmarks.common import load_note, machine, write_table
from lrp_llm import load_model
from patching import sweep

CLEAN = (
    "Here is a short quiz about famous places around the world. Answer each question with one word. "
    "Question: In which city is the Eiffel Tower? Answer: The Eiffel Tower is in the city of"
)
CORRUPTED = (
    "Here is a short quiz about famous places around the world. Answer each question with one word. "
    "Question: In which city is the Colosseum? Answer: The Colosseum is in the city of"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="resid", help="comma list of resid, attn, mlp (default resid)")
    ap.add_argument("--positions", type=int, default=0, help="only the last N positions (default: all)")
    ap.add_argument("--naive-every", type=int, default=1, help="naive sweep on every K-th position only (time scaled)")
    ap.add_argument("--skip-naive", action="store_true", help="leave out the (slow) naive sweep")
    ap.add_argument("--skip-batched", action="store_true", help="leave out the batched engine")
    args = ap.parse_args(argv)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    load_before = os.getloadavg()[0]
    model, tok = load_model()
    clean, corrupted = tok(CLEAN)["input_ids"], tok(CORRUPTED)["input_ids"]
    assert len(clean) == len(corrupted), (len(clean), len(corrupted))
    a, w = tok(" Paris")["input_ids"][0], tok(" Rome")["input_ids"][0]
    T, L = len(clean), model.config.num_hidden_layers
    positions = list(range(T - args.positions, T)) if args.positions else None
    n_pos = args.positions or T
    metrics = ("logit_diff", "recovery")

    all_pos = positions if positions is not None else list(range(T))
    naive_pos = all_pos[:: max(1, args.naive_every)]

    def run(engine: str, pos=None):
        pos = pos if pos is not None else positions
        t0 = time.perf_counter()
        out = sweep(model, clean, corrupted, a, w, kinds=kinds, positions=pos, metrics=metrics, engine=engine)
        secs = time.perf_counter() - t0
        if pos is not None and len(pos) != len(all_pos):
            secs *= len(all_pos) / len(pos)  # same full forward per variant: scale to the whole grid
        return secs, out

    print(f"{L} layers x {n_pos} positions x {len(kinds)} kinds = {L * n_pos * len(kinds)} variants, {T} tokens")
    runs: dict[str, tuple[float, object]] = {}
    runs["stepper (1st)"] = run("auto")
    print(f"stepper {runs['stepper (1st)'][0]:.1f} s ({runs['stepper (1st)'][1].engine})")
    if not args.skip_batched:
        runs["batched"] = run("batched")
        print(f"batched {runs['batched'][0]:.1f} s")
    if not args.skip_naive:
        runs["naive"] = run("naive", naive_pos)
        print(f"naive {runs['naive'][0]:.1f} s")
    runs["stepper (2nd)"] = run("auto")
    print(f"stepper {runs['stepper (2nd)'][0]:.1f} s")
    stepper_s = (runs["stepper (1st)"][0] + runs["stepper (2nd)"][0]) / 2
    ref_name = "naive" if "naive" in runs else "batched" if "batched" in runs else None
    ref = runs[ref_name][1] if ref_name else None
    base_s = runs[ref_name][0] if ref_name else float("nan")

    def diffs(out) -> tuple[str, str]:
        if ref is None or out is ref:
            return "-", "-"
        cols = [all_pos.index(p) for p in ref.positions]  # the reference's cells

        def d(m: str) -> float:
            return max(float(np.abs(out.values[(k, m)][:, cols] - ref.values[(k, m)]).max()) for k in kinds)

        return f"{d('logit_diff'):.1e}", f"{d('recovery'):.1e}"

    n = L * n_pos * len(kinds)
    rows = []
    what = {
        "naive": "one full forward per variant via `intervene`, all logits"
        + (
            f" (every {args.naive_every}th position, time x {len(all_pos) / len(naive_pos):.2f})"
            if args.naive_every > 1
            else ""
        ),
        "batched": "variants batched through the whole model, last-position logits",
        "stepper (1st)": "batched, prefix of layers reused, only positions >= patched one, 2 logits",
        "stepper (2nd)": "same, run again after the others",
    }
    for name, (secs, out) in runs.items():
        ratio = base_s / secs if ref_name else float("nan")
        d_ld, d_rc = diffs(out)
        rows.append([name, what[name], f"{secs:.1f}", f"{n / secs:.1f}", f"{ratio:.1f}x", d_ld, d_rc])
    ratio = base_s / stepper_s
    rows.append(["**stepper (mean)**", "", f"{stepper_s:.1f}", f"{n / stepper_s:.1f}", f"**{ratio:.1f}x**", "", ""])
    notes = [
        f"Machine: {machine()}; {load_note(load_before, os.getloadavg()[0])}; times are wall clock of one run each. "
        f"Measured {date.today().isoformat()}.",
        f"Model: SmolLM2-135M-Instruct (bundled GGUF, float32), {L} layers. Prompts: {T} tokens each, clean names "
        "the Eiffel Tower, corrupted the Colosseum; metric: logit(' Paris') - logit(' Rome') at the last position "
        "and normalised recovery.",
        f"Sweep: {'/'.join(kinds)} after every layer x {n_pos} positions = {n} patched runs, direction denoise "
        "(clean activation into the corrupted run). All engines in this one process, on the same prompts.",
        f"Ratio = time of the {ref_name or 'reference'} sweep / time of each engine; max |diff| against it over its "
        f"cells ({len(ref.positions) if ref is not None else 0} positions x {L} layers; target <= 1e-4; the engines "
        "add in a different order, float32).",
    ]
    write_table(
        "patching_speed",
        "Patching sweep speed on SmolLM2",
        [
            "engine",
            "what",
            "seconds",
            "variants / s",
            f"speed-up vs {ref_name}",
            "max diff logit diff",
            "max diff recovery",
        ],
        rows,
        notes,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
