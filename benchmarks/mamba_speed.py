"""MambaLRP speed: our chunked scan vs gradient x input and vs transformers' torch path.

A random-weight ``MambaForCausalLM`` with Mamba-130M shapes (24 layers, d_model 768,
d_state 16, expand 2, vocab 50280), float32 on the CPU, one explained token (the last)
at each length. Measured side by side in this process, interleaved, best of
``--repeats``:

- MambaLRP: ``relevance(method="mambalrp")`` (fast scan, rules installed)
- gradient x input: ``relevance(method="grad-x-input")`` on the same fast scan
- reference: plain gradient through transformers' own torch path (step-by-step scan
  under autograd, what runs without mamba-ssm), timed on ``--ref-layers`` layers and
  scaled linearly to 24 (every layer costs the same); its backward grows with the
  square of the length, so it is only run up to ``--ref-max`` tokens.

Peak memory is the growth of the peak resident set size (VmHWM, reset through
``/proc/self/clear_refs``) of a fresh child process during one explanation, over its
size with the model loaded (Linux only).

    .venv/bin/python benchmarks/mamba_speed.py [--lengths 256 1024 4096] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "mamba_speed.md"
ROWS = RESULTS.with_suffix(".json")  # measured rows; a run with --lengths replaces only those
LAYERS = 24


def build(layers: int = LAYERS):
    from transformers import MambaConfig, MambaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    config = MambaConfig(
        vocab_size=50280,
        hidden_size=768,
        state_size=16,
        num_hidden_layers=layers,
        expand=2,
        conv_kernel=4,
        use_bias=False,
        use_conv_bias=True,
    )
    torch.manual_seed(0)
    return MambaForCausalLM(config).eval()


def ids_of(length: int) -> list[int]:
    g = torch.Generator().manual_seed(length)
    return [int(i) for i in torch.randint(10, 50000, (length,), generator=g)]


# From this length on, blocks are recomputed in the backward pass (as explain() does above
# 4096 tokens): activations of 24 layers x 4096 tokens would need about 8 GB.
CHECKPOINT_FROM = 4096


def time_method(model, ids, method: str) -> float:
    from lrp_llm.engines.causal_lm import relevance

    t0 = time.perf_counter()
    relevance(model, ids, [len(ids) - 1], method=method, checkpoint=len(ids) >= CHECKPOINT_FROM)
    return time.perf_counter() - t0


def time_reference(model, ids) -> float:
    """Plain gradient of the last token's logit through transformers' own forward."""
    for p in model.parameters():
        p.requires_grad_(False)
    emb = model.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
    t0 = time.perf_counter()
    out = model(inputs_embeds=emb, use_cache=False, logits_to_keep=1).logits
    (grad,) = torch.autograd.grad(out[0, -1, ids[-1]], emb)
    (emb * grad).sum(-1)
    return time.perf_counter() - t0


def peak_child(method: str, length: int) -> float:
    """Peak RSS growth (MB) of a child process doing one explanation."""
    cmd = [sys.executable, __file__, "--child", method, str(length), "--threads", str(torch.get_num_threads())]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(method: str, length: int) -> None:
    model = build()
    ids = ids_of(length)
    time_method(model, ids[:32], method)  # first-call allocations (imports, thread pools)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    base = _status_kb("VmRSS")
    time_method(model, ids, method)
    print(json.dumps({"peak_mb": (_status_kb("VmHWM") - base) / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ref-layers", type=int, default=1)
    parser.add_argument("--ref-max", type=int, default=1024)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--note", default="", help="a line about the machine, added under the table")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    model = build()
    ref_model = build(args.ref_layers)
    rows = []
    for length in args.lengths:
        ids = ids_of(length)
        time_method(model, ids[:64], "mambalrp")  # warm-up
        lrp, gxi = [], []
        for _ in range(args.repeats):
            lrp.append(time_method(model, ids, "mambalrp"))
            gxi.append(time_method(model, ids, "grad-x-input"))
        row = {"tokens": length, "runs": args.repeats, "mambalrp_s": min(lrp), "gxi_s": min(gxi)}
        row["ratio_gxi"] = row["mambalrp_s"] / row["gxi_s"]
        if length <= args.ref_max:
            ref = time_reference(ref_model, ids) * LAYERS / args.ref_layers
            row["reference_s"] = ref
            row["speedup"] = ref / row["mambalrp_s"]
        if not args.no_memory:
            row["mambalrp_mb"] = peak_child("mambalrp", length)
            row["gxi_mb"] = peak_child("grad-x-input", length)
        rows.append(row)
        print(json.dumps(row), flush=True)
    old = json.loads(ROWS.read_text()) if ROWS.is_file() else []
    merged = {r["tokens"]: r for r in old} | {r["tokens"]: r for r in rows}
    rows = [merged[k] for k in sorted(merged)]
    from lrp_llm.results.base import write_atomic

    write_atomic(ROWS, json.dumps(rows, indent=1))
    write_table(rows, args)


def write_table(rows, args) -> None:
    from lrp_llm.results.base import write_atomic

    def f(row, key, fmt):
        return fmt.format(row[key]) if key in row else "not run"

    lines = [
        "# MambaLRP speed (Mamba-130M shapes, CPU)",
        "",
        f"Random-weight `MambaForCausalLM`, 24 layers, d_model 768, d_state 16, float32; one explained "
        f"token; best of *runs*, the two methods interleaved in one process; {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}. Reference = plain gradient through "
        f"transformers' torch path (sequential scan), timed on {args.ref_layers} layer(s) and scaled x"
        f"{LAYERS // args.ref_layers}; not run above {args.ref_max} tokens (its backward is quadratic in the length). "
        "Peak memory: RSS growth of a fresh process during one explanation. "
        f"From {CHECKPOINT_FROM} tokens on, both methods recompute each block in the backward pass "
        "(activation checkpointing, as `explain` does for long inputs).",
        "",
        "| tokens | runs | MambaLRP (s) | grad x input (s) | MambaLRP / GxI | reference (s) | speed-up vs reference "
        "| peak MB MambaLRP | peak MB GxI |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tokens']} | {r.get('runs', 1)} | {r['mambalrp_s']:.2f} | {r['gxi_s']:.2f} | {r['ratio_gxi']:.2f} | "
            f"{f(r, 'reference_s', '{:.0f}')} | {f(r, 'speedup', '{:.0f}x')} | {f(r, 'mambalrp_mb', '{:.0f}')} | "
            f"{f(r, 'gxi_mb', '{:.0f}')} |"
        )
    if getattr(args, "note", ""):
        lines += ["", args.note]
    lines.append("")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(RESULTS, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
