"""BiLRP cost on all-MiniLM-L6-v2: a pair of 32-token sentences, side by side with the per-dimension loop.

    .venv/bin/python -m benchmarks.bilrp_speed [--repeats 5] [--slow-repeats 2] [--threads 1,default] [--corpus 20]

One pair = the first-order map of each sentence (384 x 32 token contributions) and
their product (32 x 32 interactions). Strategies alternate in one process on the same
pair (best of ``--repeats``): the per-dimension loop (one backward pass per embedding
dimension and sentence, retain_graph: the published method's cost), all dimensions as
one batch of cotangents, forward mode (one tangent per token, ``vmap(jvp)``) and the
CP-LRP replay (the default: the linear map CP-LRP makes of the encoder, computed
explicitly on one batch of one-token rows). Each result is compared with the loop's. Wall and
process CPU time, with one thread and with torch's default. Then one query against
``--corpus`` texts (N + 1 maps), and one map of a single long text (``--long``
lengths) by the replay and by batched cotangents. Writes benchmarks/results/bilrp_speed.md.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date

import numpy as np
import torch

from benchmarks.common import load_note, machine, write_table
from lrp_llm.analyses.bilrp import SimilarityExplainer, first_order_map
from lrp_llm.checkpoints.loading import load_encoder

SENTENCES = (
    "A man in a red jacket is playing an old acoustic guitar on the steps of the train station while a small crowd "
    "of commuters stops to listen and a dog sleeps",
    "On the station stairs a woman strums her guitar for the people waiting for the evening train, and some of them "
    "drop coins into the open case",
)
CORPUS = (
    "A woman plays the guitar.",
    "The cat sleeps on the sofa all afternoon.",
    "Stock markets fell sharply after the announcement.",
    "A musician performs for commuters at the station.",
    "He repaired the bicycle with a new chain.",
)


def ids_of_length(tokenizer, text: str, n: int) -> list[int]:
    body = tokenizer(text, add_special_tokens=False)["input_ids"][: n - 2]
    if len(body) < n - 2:
        raise SystemExit(f"text too short for {n} tokens")
    return [tokenizer.cls_token_id, *body, tokenizer.sep_token_id]


def pair(model, ids_a, ids_b, **kw) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    phi_a, c_a = first_order_map(model, ids_a, **kw)
    phi_b, c_b = first_order_map(model, ids_b, **kw)
    r = (c_a.T.double() @ c_b.double()) / (phi_a.double().norm() * phi_b.double().norm())
    return r.numpy(), c_a, c_b


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


VARIANTS = (
    ("per-dimension loop (reference)", {"rules": "cp-lrp", "strategy": "loop"}),
    ("batched cotangents (is_grads_batched)", {"rules": "cp-lrp", "strategy": "reverse"}),
    ("forward mode, vmap(jvp)", {"rules": "cp-lrp", "strategy": "forward"}),
    ("CP-LRP replay (default)", {"rules": "cp-lrp", "strategy": "replay"}),
    ("AttnLRP, forward mode", {"rules": "attnlrp", "strategy": "forward"}),
    ("grad-x-input-products, forward mode", {"method": "grad-x-input-products", "strategy": "forward"}),
)
REFERENCE = VARIANTS[0][0]
SLOW = {"per-dimension loop (reference)", "batched cotangents (is_grads_batched)"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5, help="runs of the fast strategies (best is kept)")
    ap.add_argument("--slow-repeats", type=int, default=2, help="runs of the loop and the batched cotangents")
    ap.add_argument("--corpus", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", default="1,default", help="thread settings to measure, e.g. 1,default")
    ap.add_argument("--long", default="64,128,256,512", help="lengths of single long texts to time ('' to skip)")
    args = ap.parse_args()
    default_threads = torch.get_num_threads()
    settings = [default_threads if t == "default" else int(t) for t in args.threads.split(",")]
    model, tok = load_encoder(dtype="float32")
    ids_a = ids_of_length(tok, SENTENCES[0], args.tokens)
    ids_b = ids_of_length(tok, SENTENCES[1], args.tokens)
    load_before = os.getloadavg()[0]
    pair(model, ids_a, ids_b, strategy="replay")  # warm-up (first-call allocations)

    rows = []
    summary = []
    for threads in settings:
        torch.set_num_threads(threads)
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}
        outputs: dict[str, np.ndarray] = {}
        for rep in range(args.repeats):
            for name, kw in VARIANTS:
                if name in SLOW and rep >= args.slow_repeats:
                    continue  # seconds each
                w, c, (r, _, _) = timed(lambda kw=kw: pair(model, ids_a, ids_b, **kw))
                wall[name] = min(wall.get(name, float("inf")), w)
                cpu[name] = min(cpu.get(name, float("inf")), c)
                outputs[name] = r
                print(f"[{threads} threads] {name}: {w:.3f} s wall, {c:.3f} s CPU", flush=True)
        for name, kw in VARIANTS:
            same_rules = kw.get("rules") == "cp-lrp"
            diff = f"{float(np.abs(outputs[name] - outputs[REFERENCE]).max()):.1e}" if same_rules else "(other rules)"
            bold = "**" if name.startswith("CP-LRP replay") else ""
            rows.append(
                [
                    str(threads),
                    name,
                    f"{bold}{wall[name]:.3f}{bold}",
                    f"{cpu[name]:.3f}" if threads == 1 else "",
                    f"{bold}{wall[REFERENCE] / wall[name]:.1f}x{bold}",
                    diff,
                ]
            )
        summary.append((threads, wall["CP-LRP replay (default)"], wall[REFERENCE] / wall["CP-LRP replay (default)"]))
        # one query against a corpus: N + 1 maps
        texts = [CORPUS[k % len(CORPUS)] + f" ({k})" for k in range(args.corpus)]
        explainer = SimilarityExplainer(model, tok)
        w, c, ranked = timed(lambda texts=texts, explainer=explainer: explainer.rank(SENTENCES[0], texts))
        rows.append(
            [
                str(threads),
                f"query vs {args.corpus} short texts, ranked ({explainer.maps_computed} maps)",
                f"{w:.3f}",
                f"{c:.3f}" if threads == 1 else "",
                "",
                f"top: {ranked[0].text_b[:28]!r}",
            ]
        )

    torch.set_num_threads(default_threads)
    # one long text: the replay's cost grows with the square of the length
    long_text = " ".join(SENTENCES * 20)
    for n in [int(k) for k in args.long.split(",") if k.strip()]:
        ids = ids_of_length(tok, long_text, n)
        runs = [timed(lambda ids=ids: first_order_map(model, ids, strategy="replay")) for _ in range(2)]
        replay, c_rep = min(w for w, _, _ in runs), runs[-1][2][1]
        rev, _, (_, c_rev) = timed(lambda ids=ids: first_order_map(model, ids, strategy="reverse"))
        rows.append(
            [
                str(default_threads),
                f"one text of {n} tokens, one map: replay (batched cotangents {rev:.1f} s)",
                f"{replay:.3f}",
                "",
                f"{rev / replay:.1f}x vs cotangents",
                f"{float((c_rep - c_rev).abs().max()):.1e} vs cotangents",
            ]
        )
        print(f"[{n} tokens] replay {replay:.2f} s, batched cotangents {rev:.2f} s", flush=True)
    load_after = os.getloadavg()[0]
    write_table(
        "bilrp_speed",
        "BiLRP speed on all-MiniLM-L6-v2 (CPU)",
        ["threads", "computation", "wall s", "CPU s", "speed-up vs loop", "max abs diff vs loop"],
        rows,
        [
            f"Machine: {machine()}. Measured {date.today().isoformat()}; {load_note(load_before, load_after)}. "
            "The single-thread CPU seconds are what one idle core would take.",
            f"One pair = two sentences of {args.tokens} tokens each ([CLS] and [SEP] included), mean pooling, "
            "cosine mode: both first-order maps (384 x 32) and the 32 x 32 interaction matrix.",
            f"All strategies run alternately in one process on the same pair; best of {args.repeats} "
            f"(of {args.slow_repeats} for the loop and the batched cotangents).",
            "Targets (issue 5): a pair <= 1 s; >= 30x faster than the per-dimension loop.",
            "Last rows: one map of a single long text (the pair's sentences repeated), replay against batched "
            "cotangents (the next best strategy there), compared with each other.",
            "Summary: "
            + "; ".join(f"{t} thread(s): replay {s:.2f} s wall, {x:.0f}x the loop" for t, s, x in summary)
            + ".",
        ],
    )


if __name__ == "__main__":
    main()
