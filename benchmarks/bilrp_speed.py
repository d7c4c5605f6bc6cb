"""BiLRP cost on all-MiniLM-L6-v2: a pair of 32-token sentences, side by side with the per-dimension loop.

    .venv/bin/python -m benchmarks.bilrp_speed [--repeats 3] [--loop-repeats 1] [--corpus 20]

One pair = the first-order map of each sentence (384 x 32 token contributions) and
their product (32 x 32 interactions). Strategies alternate in one process on the same
pair (best of ``--repeats``): the per-dimension loop (one backward pass per embedding
dimension and sentence, retain_graph: the published method's cost), all dimensions as
one batch of cotangents, forward mode (one tangent per token, ``vmap(jvp)``) and the
CP-LRP replay (the default). Each result is compared with the loop's. Then one query
against ``--corpus`` texts (N + 1 maps). Writes benchmarks/results/bilrp_speed.md.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date

import numpy as np
import torch

from benchmarks.common import machine, write_table
from lrp_llm.bilrp import SimilarityExplainer, first_order_map
from lrp_llm.loading import load_encoder

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-repeats", type=int, default=1)
    ap.add_argument("--corpus", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    model, tok = load_encoder(dtype="float32")
    ids_a = ids_of_length(tok, SENTENCES[0], args.tokens)
    ids_b = ids_of_length(tok, SENTENCES[1], args.tokens)
    load_before = os.getloadavg()[0]
    pair(model, ids_a, ids_b, strategy="replay")  # warm-up (first-call allocations)

    variants = [
        ("per-dimension loop (reference)", {"strategy": "loop"}, args.loop_repeats),
        ("batched cotangents (is_grads_batched)", {"strategy": "reverse"}, args.repeats),
        ("forward mode, vmap(jvp)", {"strategy": "forward"}, args.repeats),
        ("CP-LRP replay (default)", {"strategy": "replay"}, args.repeats),
    ]
    times: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    for rep in range(max(args.repeats, args.loop_repeats)):
        for name, kw, repeats in variants:
            if rep >= repeats:
                continue
            t0 = time.perf_counter()
            r, _, _ = pair(model, ids_a, ids_b, rules="cp-lrp", **kw)
            d = time.perf_counter() - t0
            times[name] = min(times.get(name, float("inf")), d)
            outputs[name] = r
            print(f"{name}: {d:.3f} s", flush=True)
    extra = [
        ("AttnLRP, forward mode", {"rules": "attnlrp", "strategy": "forward"}),
        ("grad-x-input-products, forward mode", {"method": "grad-x-input-products", "strategy": "forward"}),
    ]
    for name, kw in extra:
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            pair(model, ids_a, ids_b, **kw)
            best = min(best, time.perf_counter() - t0)
        times[name] = best
        print(f"{name}: {best:.3f} s", flush=True)
    load_after = os.getloadavg()[0]

    reference = outputs["per-dimension loop (reference)"]
    loop_s = times["per-dimension loop (reference)"]
    rows = []
    for name, _, _ in variants:
        diff = float(np.abs(outputs[name] - reference).max())
        ratio = loop_s / times[name]
        bold = "**" if name.startswith("CP-LRP replay") else ""
        rows.append([name, f"{bold}{times[name]:.3f}{bold}", f"{bold}{ratio:.1f}x{bold}", f"{diff:.1e}"])
    for name, _ in extra:
        rows.append([name, f"{times[name]:.3f}", f"{loop_s / times[name]:.1f}x", "(other rules)"])

    # one query against a corpus: N + 1 maps
    texts = [CORPUS[k % len(CORPUS)] + f" ({k})" for k in range(args.corpus)]
    explainer = SimilarityExplainer(model, tok)
    t0 = time.perf_counter()
    ranked = explainer.rank(SENTENCES[0], texts)
    corpus_s = time.perf_counter() - t0
    rows.append(
        [
            f"query vs {args.corpus} texts (ranked, {explainer.maps_computed} maps)",
            f"{corpus_s:.3f}",
            "",
            f"top: {ranked[0].text_b[:30]!r}",
        ]
    )
    write_table(
        "bilrp_speed",
        "BiLRP speed on all-MiniLM-L6-v2 (CPU)",
        ["computation", "seconds", "speed-up vs loop", "max |diff| vs loop"],
        rows,
        [
            f"Machine: {machine()}. Measured {date.today().isoformat()}; load average {load_before:.1f} before, "
            f"{load_after:.1f} after (the machine is shared; absolute times vary with the load, the ratios less).",
            f"One pair = two sentences of {args.tokens} tokens each ([CLS] and [SEP] included), CP-LRP rules, mean "
            "pooling, cosine mode: both first-order maps (384 x 32) and the 32 x 32 interaction matrix.",
            f"Strategies alternate in one process on the same pair; best of {args.repeats} "
            f"({args.loop_repeats} for the loop: 768 backward passes).",
            "Targets (issue 5): a pair <= 1 s; >= 30x faster than the per-dimension loop.",
        ],
    )


if __name__ == "__main__":
    main()
