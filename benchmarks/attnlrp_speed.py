"""AttnLRP cost on SmolLM2-135M-Instruct, side by side with gradient x input.

    .venv/bin/python -m benchmarks.attnlrp_speed [--lengths 128,512,2048,8192] [--repeats 3]

Per input length: time of one explanation (forward + backward, logits at the explained
position only) for grad-x-input, AttnLRP and CP-LRP, alternating in one process (best
of ``--repeats``), and the peak resident memory of the process during each. Then all
tokens of a 20-token answer: one forward + 20 backward passes, against the bound
1.1 x (forward + 20 backward) and against 20 separate explanations.
Writes benchmarks/results/attnlrp_speed.md.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks.common import PeakRSS, load_note, machine, write_table
from lrp_llm import load_model
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.engines.generation import build_prompt_ids, generate_greedy
from lrp_llm.mechanism.context import lrp_rules

TEXT = (
    "The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in the 10th and 11th "
    "centuries gave their name to Normandy, a region in France. They were descended from Norse raiders and pirates "
    "from Denmark, Iceland and Norway who, under their leader Rollo, agreed to swear fealty to King Charles III of "
    "West Francia. Through generations of assimilation and mixing with the native Frankish and Roman-Gaulish "
    "populations, their descendants would gradually merge with the Carolingian-based cultures of West Francia. "
)


def long_ids(tokenizer, n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    return ids[:n]


CLOCK = time.perf_counter


def best(fn, repeats: int, mem: PeakRSS) -> tuple[float, float]:
    """Best time of ``repeats`` calls (wall, or CPU seconds of this process with --cpu-time) and peak MiB."""
    times, peaks = [], []
    for _ in range(repeats):
        with mem.watch():
            t0 = CLOCK()
            fn()
            times.append(CLOCK() - t0)
        peaks.append(mem.peak_mib)
    return min(times), max(peaks)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="128,512,2048,8192")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--answer", type=int, default=20)
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this process's CPU seconds (steadier when other jobs share the machine)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    load_before = os.getloadavg()[0]
    model, tok = load_model()
    mem = PeakRSS()
    rows = []
    for n in [int(x) for x in args.lengths.split(",")]:
        ids = long_ids(tok, n)
        reps = args.repeats if n <= 2048 else 1
        res = {}
        for method in ("grad-x-input", "attnlrp", "cp-lrp"):
            res[method] = best(lambda m=method, x=ids, k=n: relevance(model, x, [k - 1], method=m), reps, mem)
        g, a, c = res["grad-x-input"], res["attnlrp"], res["cp-lrp"]
        ckpt = "yes" if n > 4096 else "no"
        rows.append(
            [
                str(n),
                f"{g[0]:.2f}",
                f"{a[0]:.2f}",
                f"**{a[0] / g[0]:.2f}**",
                f"{c[0]:.2f}",
                f"{c[0] / g[0]:.2f}",
                f"{g[1]:.0f}",
                f"{a[1]:.0f}",
                ckpt,
            ]
        )
        print(rows[-1], flush=True)

    # all tokens of an answer: one forward, one backward per token
    prompt = build_prompt_ids(tok, "Tell me about the Normans in three sentences.", context=TEXT)
    answer = generate_greedy(model, prompt, args.answer, stop=None)
    ids = prompt + answer
    positions = list(range(len(prompt), len(ids)))
    reps = args.repeats

    def forward_only():
        with lrp_rules(model, "attnlrp"), torch.enable_grad():
            e = model.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
            keep = torch.tensor([p - 1 for p in positions])
            return model(inputs_embeds=e, logits_to_keep=keep, use_cache=False).logits

    t_forward, _ = best(forward_only, reps, mem)
    one = min(
        (relevance(model, ids, [positions[-1]], method="attnlrp")["timings"] for _ in range(reps)),
        key=lambda t: t["forward"] + t["backward"],
    )
    t_backward = one["backward"]
    t_all, _ = best(lambda: relevance(model, ids, positions, method="attnlrp"), reps, mem)
    t_sep, _ = best(lambda: [relevance(model, ids[: p + 1], [p], method="attnlrp") for p in positions], 1, mem)
    bound = t_forward + len(positions) * t_backward
    notes = [
        f"Machine: {machine()}. Model: SmolLM2-135M-Instruct (bundled GGUF, float32). Measured "
        f"{time.strftime('%Y-%m-%d')}; best of {args.repeats} runs (1 run above 2048 tokens). Clock: "
        + ("CPU seconds of the benchmark process (other jobs shared the machine)" if args.cpu_time else "wall time")
        + f"; {load_note(load_before, os.getloadavg()[0])}.",
        "One explanation = one forward pass (logits only at the explained position) + one backward pass. "
        "The methods run one after another in one process on the same input. Peak = resident memory of the whole process "
        "(model included, about 0.6 GB) during the call.",
        "Inputs above 4096 tokens recompute each block's activations in the backward pass (checkpointing), "
        "for every method alike.",
    ]
    header = [
        "tokens",
        "grad x input (s)",
        "AttnLRP (s)",
        "AttnLRP / GxI",
        "CP-LRP (s)",
        "CP-LRP / GxI",
        "peak GxI (MiB)",
        "peak AttnLRP (MiB)",
        "checkpointing",
    ]
    path = write_table("attnlrp_speed", "AttnLRP speed and memory on SmolLM2", header, rows, notes)
    n = len(positions)
    extra = [
        "",
        f"## All {n} tokens of an answer ({len(ids)} tokens in all)",
        "",
        "| measure | seconds |",
        "|---|---|",
        f"| one forward under the rules | {t_forward:.3f} |",
        f"| one backward pass | {t_backward:.3f} |",
        f"| bound: forward + {n} backward | {bound:.3f} |",
        f"| explain all {n} tokens (one forward reused) | {t_all:.3f} |",
        f"| ratio to the bound (target <= 1.1) | **{t_all / bound:.2f}** |",
        f"| {n} separate explanations (own forward each) | {t_sep:.3f} |",
        f"| speed-up over separate explanations | **{t_sep / t_all:.2f}x** |",
    ]
    with path.open("a") as f:
        f.write("\n".join(extra) + "\n")
    print("\n".join(extra))


if __name__ == "__main__":
    main()
