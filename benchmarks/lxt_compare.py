"""Our AttnLRP vs LXT 2.1 (the AttnLRP authors' library), same model, same token ids.

    sh benchmarks/make_lxt_venv.sh                    # once: LXT in its own environment
    .venv/bin/python -m benchmarks.lxt_compare [--limit 12] [--repeats 3] [--threads N]

LXT does not import under transformers 5, so it runs in ``benchmarks/.venv-lxt``
(transformers 4.52.4) as a subprocess (``lxt_worker.py``); the two alternate item by
item. Per item: seconds of one explanation (best of ``--repeats``; one forward with the
logit at the explained position only + one backward, in both), the time ratio, the
Pearson correlation of the two relevance vectors and the difference of the explained
logits (the same weights give the same logit). Items: QA items of
``benchmarks/data/qa.jsonl`` and long ones of ``long.jsonl`` (a spread of lengths).
Writes benchmarks/results/lxt.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, write_table
from benchmarks.peers import (
    PeerUnavailable,
    WorkerProcess,
    add_compare_args,
    geometric_mean,
    load_compare_inputs,
    pearson,
)

WORKER = Path(__file__).resolve().parent / "lxt_worker.py"


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description="our AttnLRP vs LXT 2.1")
    add_compare_args(ap, "lxt", limit=6, repeats=3)
    args = ap.parse_args(argv)

    import torch

    from lrp_llm.engines.causal_lm import relevance

    model, model_path, threads, prepared = load_compare_inputs(args)
    notes = [
        f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d')}. Model: {Path(model_path).name}, float32, "
        f"{threads} torch threads in both processes.",
        "One explanation = one forward pass (logit only at the explained position) + one backward pass, best of "
        f"{args.repeats} after one untimed warm-up call on each side; ours and LXT alternate item by item in one run on the same token ids. "
        "Time ratio > 1: LXT is slower. r = Pearson correlation of the two relevance vectors (all tokens before the "
        "explained one). abs Δ logit: the two stacks compute the same explained logit.",
    ]
    header = ["item", "tokens", "ours (s)", "LXT (s)", "LXT / ours", "r", "same top-1", "abs Δ logit"]
    rows: list[list[str]] = []
    try:
        with WorkerProcess(
            args.lxt_python,
            WORKER,
            model_path,
            "--threads",
            str(threads),
            timeout_note="; run sh benchmarks/make_lxt_venv.sh",
        ) as lxt:
            notes.append(
                f"LXT 2.1 in its own environment: transformers {lxt.info['transformers']}, torch {lxt.info['torch']} "
                f"(ours: transformers {__import__('transformers').__version__}, torch {torch.__version__})."
            )
            ratios, corrs = [], []
            if prepared:  # warm-up on both sides (lazy initialisation; the worker is done loading), not timed
                first = prepared[0]
                relevance(model, first.input_ids[: first.position + 1], [first.position], method="attnlrp")
                lxt.request(
                    {"input_ids": first.input_ids[: first.position + 1], "position": first.position, "repeats": 1}
                )
            for prep in prepared:
                ids = prep.input_ids[: prep.position + 1]
                ours_best, ours_rel, ours_logit = float("inf"), None, None
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    out = relevance(model, ids, [prep.position], method="attnlrp")
                    ours_best = min(ours_best, time.perf_counter() - t0)
                    ours_rel = out["relevance"][0, : prep.position].double().numpy()
                    ours_logit = float(out["logits"][0])
                theirs = lxt.request({"input_ids": ids, "position": prep.position, "repeats": args.repeats})
                their_rel = np.asarray(theirs["relevance"], dtype=np.float64)
                r = pearson(ours_rel, their_rel)
                ratio = theirs["seconds"] / ours_best
                ratios.append(ratio)
                corrs.append(r)
                same_top = int(np.argmax(ours_rel)) == int(np.argmax(their_rel))
                rows.append(
                    [
                        prep.item.id,
                        str(len(ids)),
                        f"{ours_best:.3f}",
                        f"{theirs['seconds']:.3f}",
                        f"{ratio:.2f}",
                        f"{r:.6f}",
                        "yes" if same_top else "no",
                        f"{abs(ours_logit - theirs['logit']):.1e}",
                    ]
                )
                print(rows[-1], flush=True)
            if rows:
                rows.append(
                    [
                        "**all**",
                        f"{len(rows)} items",
                        "",
                        "",
                        f"**{geometric_mean(ratios):.2f}** (geo. mean)",
                        f"**{np.nanmin(corrs):.6f}** (min)",
                        f"{sum(r[6] == 'yes' for r in rows)}/{len(rows)}",
                        "",
                    ]
                )
    except PeerUnavailable as exc:
        notes.append(f"LXT could not be run: {exc}.")
        rows = [["–", "–", "–", "–", "–", "–", "–", "–"]]
    return write_table("lxt", "Our AttnLRP vs LXT 2.1 on SmolLM2", header, rows, notes, out_dir=args.out)


if __name__ == "__main__":
    main()
