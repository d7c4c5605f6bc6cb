"""Our gradient methods vs inseq 0.7.1, same model, same token ids.

    sh benchmarks/make_inseq_venv.sh                 # once: inseq with our transformers 5.23.0
    .venv/bin/python -m benchmarks.inseq_compare [--limit 4] [--ig-steps 16] [--repeats 2] [--threads N]

inseq runs in ``benchmarks/.venv-inseq`` (its declared dependencies include CUDA 11
wheels that we do not install; with our transformers 5.23.0 it imports and runs) as a
subprocess (``inseq_worker.py``); ours and inseq alternate item by item. Methods:
gradient x input, saliency and integrated gradients, the last twice: with inseq's own
baseline (the UNK token's embedding; captum's Gauss-Legendre steps) and as lrp_llm does
it (zero embedding, midpoint rule). Per method: seconds per explanation (best of
``--repeats``), the time ratio, and the Pearson correlation of the two relevance vectors.
inseq's attention-weight methods have no counterpart in lrp_llm (its baselines are
gradient methods and LRP), so they are not timed. Writes benchmarks/results/inseq.md.
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

WORKER = Path(__file__).resolve().parent / "inseq_worker.py"


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description="our gradient methods vs inseq")
    add_compare_args(ap, "inseq", limit=4, repeats=2)
    ap.add_argument("--ig-steps", type=int, default=16)
    args = ap.parse_args(argv)

    import transformers

    from lrp_llm.engines.causal_lm import relevance

    model, model_path, threads, prepared = load_compare_inputs(args)
    lengths = [p.position + 1 for p in prepared] or [0]
    cases = [
        ("grad-x-input", "input_x_gradient", {}),
        ("saliency", "saliency", {}),
        (f"integrated-gradients ({args.ig_steps} steps), inseq's baseline", "integrated_gradients", {}),
        (f"integrated-gradients ({args.ig_steps} steps), same baseline and rule", "integrated_gradients", {"zero": 1}),
    ]
    notes = [
        f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d')}. Model: {Path(model_path).name}, float32, "
        f"{threads} torch threads in both processes. {len(prepared)} items of "
        f"{min(lengths)}-{max(lengths)} tokens (QA and long-context items); one target token each.",
        "Seconds: best of "
        f"{args.repeats} per item, mean over items; ours = one `lrp_llm.relevance` call, inseq = one "
        "`model.attribute(prompt, prompt + target, attributed_fn='logit')` call. inseq takes text and re-tokenises it, "
        "dropping EOS tokens (the chat template's end-of-turn markers): both sides explain the ids inseq uses; "
        "'same ids' counts the items where those are our original ids. Ratio > 1: inseq is slower (geometric mean). "
        "r = Pearson correlation of the two relevance vectors per item (median and minimum).",
        "Integrated gradients: lrp_llm integrates from the zero embedding with the midpoint rule; inseq (captum) "
        "from the UNK token's embedding with Gauss-Legendre points. The last row makes inseq integrate as lrp_llm "
        "does: the UNK row of its embedding matrix is zeroed (the inputs never contain it) and captum's "
        "`riemann_middle` rule is used. IG from the zero embedding converges badly on this pre-RMSNorm model "
        "(the first norm makes the output nearly invariant to the scale of the input, so the path gradient "
        "grows like 1/alpha near the baseline), which is why the two quadratures disagree.",
        "inseq's `attention` method has no counterpart in lrp_llm and is not compared.",
    ]
    header = ["method", "items", "ours (s)", "inseq (s)", "inseq / ours", "r median", "r min", "same ids"]
    rows: list[list[str]] = []
    try:
        with WorkerProcess(
            args.inseq_python,
            WORKER,
            model_path,
            "--threads",
            str(threads),
            timeout_note="; run sh benchmarks/make_inseq_venv.sh",
        ) as peer:
            notes.insert(
                1,
                f"inseq {peer.info['inseq']} runs on transformers {peer.info['transformers']} "
                f"(ours: {transformers.__version__}), torch {peer.info['torch']}.",
            )
            stats = {label: {"ours": [], "theirs": [], "ratio": [], "r": [], "match": 0} for label, _, _ in cases}
            for n_done, prep in enumerate(prepared):
                try:
                    item_stats = compare_item(peer, model, relevance, prep, cases, args)
                except PeerUnavailable as exc:  # e.g. killed for memory: keep the items done so far
                    notes.append(f"inseq's worker stopped after {n_done} items ({exc}); the rows cover those.")
                    break
                for label, (ours, theirs, r, same_ids) in item_stats.items():
                    s = stats[label]
                    s["ours"].append(ours)
                    s["theirs"].append(theirs)
                    s["ratio"].append(theirs / ours)
                    s["match"] += same_ids
                    s["r"].append(r)
                print(prep.item.id, "done", flush=True)
            for label, _, _ in cases:
                s = stats[label]
                if not s["ours"]:
                    continue
                rows.append(
                    [
                        label,
                        str(len(s["ours"])),
                        f"{np.mean(s['ours']):.3f}",
                        f"{np.mean(s['theirs']):.3f}",
                        f"**{geometric_mean(s['ratio']):.2f}**",
                        f"{np.nanmedian(s['r']):.4f}" if s["r"] else "–",
                        f"{np.nanmin(s['r']):.4f}" if s["r"] else "–",
                        f"{s['match']}/{len(s['ours'])}",
                    ]
                )
    except PeerUnavailable as exc:
        notes.append(f"inseq could not be run: {exc}.")
        rows = [["–"] * len(header)]
    return write_table("inseq", "Our gradient methods vs inseq on SmolLM2", header, rows, notes, out_dir=args.out)


def compare_item(peer, model, relevance, prep, cases, args) -> dict[str, tuple[float, float, float, bool]]:
    """Per case: (our seconds, inseq seconds, Pearson r, whether inseq kept our ids) for one item."""
    ids = prep.input_ids[: prep.position + 1]
    # inseq drops EOS tokens (the chat template's end-of-turn markers) when it re-tokenises:
    # both sides then explain the ids inseq really uses.
    probe = peer.request({"input_ids": ids, "position": prep.position, "method": "grad-x-input"})
    same_ids = bool(probe["ids_match"])
    ids = [int(i) for i in probe["ids"]]
    position = len(ids) - 1
    out: dict[str, tuple[float, float, float, bool]] = {}
    for label, inseq_method, opts in cases:
        ours_method = "integrated-gradients" if inseq_method == "integrated_gradients" else label
        best, rel = float("inf"), None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = relevance(model, ids, [position], method=ours_method, steps=args.ig_steps)
            best = min(best, time.perf_counter() - t0)
            rel = result["relevance"][0, :position].double().numpy()
        request = {
            "input_ids": ids,
            "position": position,
            "method": ours_method,
            "n_steps": args.ig_steps,
            "repeats": args.repeats,
            "zero_baseline": bool(opts.get("zero")),
        }
        theirs = peer.request(request)
        if not theirs["ids_match"]:
            raise RuntimeError(f"inseq changed the ids of {prep.item.id} a second time")
        out[label] = (best, theirs["seconds"], pearson(rel, np.asarray(theirs["relevance"])), same_ids)
    return out


if __name__ == "__main__":
    main()
