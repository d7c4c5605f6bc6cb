"""Long-range ground truth: does the explanation find the far key/value of the recall task?

Loads the committed ``models/synthetic/recall-{mamba,mamba2,llama}`` and scores, on
held-out sequences (``synthetic_tasks.recall.held_out``, seed 777) at several distances,
the family's LRP method (MambaLRP for Mamba and Mamba-2, AttnLRP for Llama) against
gradient x input and, on the Mamba models, the hidden attention of Ali et al.
(``hidden-attention``), side by side in this process:

- accuracy: the model's greedy answer is the value;
- top-1 (context): the most relevant token, not counting the query key at the end (the
  question) and ``<s>`` (the attention sink), is the far key or value;
- top-1 (all): the same counting the query key too;
- far share: median share of |relevance| on the far key + value.

    .venv/bin/python benchmarks/recall_ground_truth.py [--n 200] [--distances 256 1024 2048]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "recall_ground_truth.md"
ROWS = RESULTS.with_suffix(".json")  # measured rows; a run replaces only the (model, distance) rows it measures
LRP = {"mamba": "mambalrp", "mamba2": "mambalrp", "llama": "attnlrp"}


def score(model, data, method: str) -> dict:
    from synthetic_tasks import recall

    t0 = time.perf_counter()
    rel = recall.batch_relevance(model, data.ids, data.answer, method)
    seconds = time.perf_counter() - t0
    rows = np.arange(len(rel))
    far = np.abs(rel[rows, data.value_pos]) + np.abs(rel[rows, data.key_pos])
    return {
        "top1_context": float(recall.top1_hits(rel, data, context_only=True).mean()),
        "top1_all": float(recall.top1_hits(rel, data).mean()),
        "far_share": float(np.median(far / np.abs(rel).sum(1))),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--distances", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--archs", nargs="+", default=sorted(LRP))
    args = parser.parse_args()
    from lrp_llm.checkpoints.loading import load_model
    from lrp_llm.mechanism.context import lrp_rules
    from synthetic_tasks import recall

    rows = []
    for arch in args.archs:
        model, _ = load_model(ROOT / "models" / "synthetic" / f"recall-{arch}")
        for d in args.distances:
            data = recall.held_out(args.n, d, seed=777)
            with torch.no_grad(), lrp_rules(model, None):
                logits = model(input_ids=torch.from_numpy(data.ids), use_cache=False, logits_to_keep=1).logits
            acc = float((logits[:, -1].argmax(-1).numpy() == data.answer).mean())
            row = {"arch": arch, "distance": d, "n": args.n, "accuracy": acc}
            row["lrp"] = score(model, data, LRP[arch])
            row["gxi"] = score(model, data, "grad-x-input")
            if arch.startswith("mamba"):
                row["hidden"] = score(model, data, "hidden-attention")
            rows.append(row)
            print(json.dumps(row), flush=True)
    from lrp_llm.results.base import write_atomic

    old = json.loads(ROWS.read_text()) if ROWS.is_file() else []
    merged = {(r["arch"], r["distance"]): r for r in old} | {(r["arch"], r["distance"]): r for r in rows}
    rows = [merged[k] for k in sorted(merged)]
    write_atomic(ROWS, json.dumps(rows, indent=1))
    write_table(rows, args)


def write_table(rows, args) -> None:
    from lrp_llm.results.base import write_atomic

    lines = [
        "# Long-range recall: ground-truth localisation",
        "",
        "Committed models `models/synthetic/recall-*` (trained by `models/synthetic/train_recall.py`), "
        "*n* held-out sequences per distance (seed 777). LRP = MambaLRP (Mamba, Mamba-2) or AttnLRP "
        "(Llama); GxI = gradient x input; HA = hidden attention (Ali et al. 2024; Mamba only), same sequences, same process. *top-1 (context)*: the most relevant "
        "token, not counting the query key at the end and `<s>`, is the far key or value; *top-1 (all)*: "
        "counting them; "
        "*far share*: median share of |relevance| on the far key + value.",
        "",
        "| model | distance | n | accuracy | LRP top-1 (context) | GxI top-1 (context) | HA top-1 (context) "
        "| LRP top-1 (all) | GxI top-1 (all) | HA top-1 (all) | LRP far share | GxI far share | HA far share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a, b, h = r["lrp"], r["gxi"], r.get("hidden")

        def ha(key: str, fmt: str, h=h) -> str:
            return "-" if h is None else format(h[key], fmt)

        lines.append(
            f"| {r['arch']} | {r['distance']} | {r.get('n', '')} | {r['accuracy']:.1%} | {a['top1_context']:.1%} | "
            f"{b['top1_context']:.1%} | {ha('top1_context', '.1%')} | {a['top1_all']:.1%} | {b['top1_all']:.1%} | "
            f"{ha('top1_all', '.1%')} | {a['far_share']:.2f} | {b['far_share']:.2f} | {ha('far_share', '.2f')} |"
        )
    lines.append("")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(RESULTS, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
