"""Component ablation: does ablating the components a ranking puts first break the answer?

1. Ground truth on the recall models (``models/synthetic/recall-{llama,mamba}``, held-out sequences,
   distance 128, seed 31337): per sequence, rank the components (Llama: MLP neurons, heads; Mamba:
   mixer channels) by relevance for the recalled value (``components=True``, AttnLRP / MambaLRP),
   by activation magnitude and at random (mean of 5 draws); zero-ablate the top k (k = 1, 2, 4, 8)
   and measure recall accuracy and the mean p(value) (:mod:`synthetic_tasks.recall_ablation`).
2. SmolLM2-135M-Instruct (``lrp_llm.load_model()``) on factual-recall prompts it answers: rank all
   MLP neurons of all 30 layers together (46,080) by (a) relevance of the answer logit under each LRP
   rule set (``attnlrp-qk-late``, the Llama family's default; ``attnlrp-qk-held``; CP-LRP; AttnLRP as
   published),
   (b) activation magnitude (|a| summed over positions), (c) gradient x activation, (d) RelP
   attribution patching of zero ablation (the predicted change of the answer logit, most negative
   first; plain attribution patching, AtP, gives minus gradient x activation, so (c) is also AtP's
   ranking), and at random (mean of 3 draws); zero-ablate the top k (k = 1, 4, 16, 64) at every
   position and report the mean drop of p(answer) and how often the greedy answer changes.

Relevance-type rankings put the most positive first (the components that support the answer).
Timings are CPU time (``time.process_time``) on a shared machine.

    .venv/bin/python benchmarks/component_ablation.py [--part recall|smollm|all] [--n 64] [--prompts 20]
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
RESULTS = ROOT / "benchmarks" / "results" / "component_ablation.md"
ROWS = RESULTS.with_suffix(".json")
RECALL_KS = (1, 2, 4, 8)
SMOL_KS = (1, 4, 16, 64)
# relevance under each LRP rule set (the default first), then the other rankings
SMOL_RELEVANCE = ("attnlrp-qk-late", "attnlrp-qk-held", "cp-lrp", "attnlrp")
SMOL_RANKINGS = (*SMOL_RELEVANCE, "activation", "grad-x-activation", "relp", "random")

# (prompt, expected answer); only those whose greedy first token is the answer's first token are used
FACTS = [
    ("The Eiffel Tower is located in the city of", " Paris"),
    ("The capital of France is", " Paris"),
    ("The capital of Italy is", " Rome"),
    ("The capital of Germany is", " Berlin"),
    ("The capital of Japan is", " Tokyo"),
    ("The capital of Spain is", " Madrid"),
    ("The capital of England is", " London"),
    ("The capital of Russia is", " Moscow"),
    ("The Colosseum is located in the city of", " Rome"),
    ("Big Ben is located in the city of", " London"),
    ("The Brandenburg Gate is located in the city of", " Berlin"),
    ("The Kremlin is located in the city of", " Moscow"),
    ("The Louvre museum is located in the city of", " Paris"),
    ("The Acropolis is located in the city of", " Athens"),
    ("The Great Wall is located in the country of", " China"),
    ("The Taj Mahal is located in the country of", " India"),
    ("The pyramids of Giza are located in the country of", " Egypt"),
    ("Mount Fuji is located in the country of", " Japan"),
    ("The official language of Brazil is", " Portuguese"),
    ("The official language of Mexico is", " Spanish"),
    ("The largest planet in the solar system is", " Jupiter"),
    ("Water is made of hydrogen and", " oxygen"),
    ("The currency of Japan is the", " yen"),
    ("The opposite of hot is", " cold"),
    ("The Statue of Liberty is located in the city of", " New"),
    ("The sun rises in the", " east"),
]


# ------------------------------------------------------------------------------ recall
def recall_part(n: int) -> list[dict]:
    from lrp_llm.checkpoints.loading import load_model
    from synthetic_tasks import recall
    from synthetic_tasks.recall_ablation import LRP, ablation_curves

    rows = []
    data = recall.held_out(n, 128, seed=31337)
    for arch, kinds in (("llama", ("neuron", "head")), ("mamba", ("channel",))):
        model, _ = load_model(ROOT / "models" / "synthetic" / f"recall-{arch}")
        for kind in kinds:
            t0 = time.process_time()
            c = ablation_curves(model, data, kind, method=LRP[arch], ks=RECALL_KS, random_draws=5)
            row = {
                "part": "recall",
                "arch": arch,
                "kind": kind,
                "n": c.n,
                "ks": list(c.ks),
                "accuracy_before": c.accuracy_before,
                "probability_before": c.probability_before,
                "accuracy": c.accuracy,
                "probability": c.probability,
                "cpu_seconds": time.process_time() - t0,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# ------------------------------------------------------------------------------ SmolLM2
def _activation_magnitude(model, ids: torch.Tensor) -> np.ndarray:
    """(n_layers, d_mlp): |a| summed over positions at every down projection's input."""
    from patching.sites import site_map

    sm = site_map(model)
    got: dict[int, torch.Tensor] = {}
    handles = []
    try:
        for i in sm.layers_with("neuron"):

            def grab(_m, args, i=i):
                got[i] = args[0][0].detach().double().abs().sum(0)

            handles.append(sm.module(i, "neuron").register_forward_pre_hook(grab))
        with torch.no_grad():
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    return torch.stack([got[i] for i in sorted(got)]).numpy()


def smollm_part(max_prompts: int = 20) -> list[dict]:
    from lrp_llm import load_model
    from lrp_llm.engines import causal_lm
    from lrp_llm.mechanism.components import ComponentSpec
    from patching.ablation import ablated_logits, zero_ablation_estimate
    from synthetic_tasks.recall_ablation import component_names

    model, tok = load_model()
    spec = ComponentSpec(full=True)
    rng = np.random.default_rng(0)
    drops: dict[str, list[list[float]]] = {r: [] for r in SMOL_RANKINGS}
    flips: dict[str, list[list[float]]] = {r: [] for r in SMOL_RANKINGS}
    used, skipped = [], []
    names = None
    t0 = time.process_time()
    for prompt, expected in FACTS:
        if len(used) >= max_prompts:
            break
        ids_list = [int(i) for i in tok(prompt)["input_ids"]]
        ids = torch.tensor([ids_list])
        answer = int(tok(expected, add_special_tokens=False)["input_ids"][0])
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1].double()
        if int(logits.argmax()) != answer:
            skipped.append(prompt)
            continue
        used.append((prompt, expected))
        p_before = float(torch.softmax(logits, -1)[answer])
        seq = [*ids_list, answer]
        scores = {}
        for ranking, method in (*((m, m) for m in SMOL_RELEVANCE), ("grad-x-activation", "grad-x-input")):
            c = causal_lm.relevance(model, seq, [len(seq) - 1], method=method, components=spec)["components"][0]
            scores[ranking] = np.asarray(c.neurons, dtype=np.float64)
        scores["activation"] = _activation_magnitude(model, ids)
        scores["relp"] = -zero_ablation_estimate(model, ids_list, answer, "neuron", rules="relp").numpy()
        n_layers, width = scores["activation"].shape
        names = component_names(n_layers, width, "neuron") if names is None else names
        orders = {r: [np.argsort(-s.ravel(), kind="stable")] for r, s in scores.items()}
        orders["random"] = [rng.permutation(n_layers * width) for _ in range(3)]
        for ranking in SMOL_RANKINGS:
            d_row, f_row = [], []
            for k in SMOL_KS:
                d, f = [], []
                for order in orders[ranking]:
                    last = ablated_logits(model, ids, [list(names[order[:k]])])[0, -1].double()
                    d.append(p_before - float(torch.softmax(last, -1)[answer]))
                    f.append(float(int(last.argmax()) != answer))
                d_row.append(float(np.mean(d)))
                f_row.append(float(np.mean(f)))
            drops[ranking].append(d_row)
            flips[ranking].append(f_row)
        print(prompt, "->", repr(expected), {r: [round(x, 3) for x in drops[r][-1]] for r in SMOL_RANKINGS}, flush=True)
    row = {
        "part": "smollm",
        "n": len(used),
        "ks": list(SMOL_KS),
        "prompts": used,
        "skipped": skipped,
        "mean_p_drop": {r: np.mean(v, axis=0).tolist() for r, v in drops.items()},
        "answer_changed": {r: np.mean(v, axis=0).tolist() for r, v in flips.items()},
        "cpu_seconds": time.process_time() - t0,
    }
    print(json.dumps(row), flush=True)
    return [row]


# ------------------------------------------------------------------------------ report
def write_table(rows: list[dict]) -> None:
    from lrp_llm.results.base import write_atomic

    lines = [
        "# Component ablation",
        "",
        "`benchmarks/component_ablation.py` (CPU time on a shared machine). Zero ablation at every position, "
        "through `patching` interventions (`patching.ablation`). Relevance-type rankings: most positive first.",
        "",
    ]
    recall_rows = [r for r in rows if r["part"] == "recall"]
    if recall_rows:
        lines += [
            "## Ground truth: recall models",
            "",
            f"Held-out sequences (distance 128, seed 31337, n = {recall_rows[0]['n']}); per sequence the "
            "components are ranked by relevance for the recalled value (AttnLRP / MambaLRP, `components=True`), "
            "by activation magnitude (summed over positions; a head: its slice's L2 norm) and at random (mean "
            "of 5 draws). Recall accuracy (mean p(value)) after ablating the top k.",
            "",
            "| model | components | k | relevance | activation | random |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in recall_rows:
            lines.append(
                f"| {r['arch']} | {r['kind']} | 0 | {r['accuracy_before']:.1%} ({r['probability_before']:.2f}) | | |"
            )
            for j, k in enumerate(r["ks"]):
                cells = " | ".join(
                    f"{r['accuracy'][x][j]:.1%} ({r['probability'][x][j]:.2f})"
                    for x in ("relevance", "activation", "random")
                )
                lines.append(f"| {r['arch']} | {r['kind']} | {k} | {cells} |")
        lines.append("")
    smol = [r for r in rows if r["part"] == "smollm"]
    if smol:
        r = smol[0]
        ranked = [x for x in SMOL_RANKINGS if x in r["mean_p_drop"]]  # a row written before a ranking was added
        lines += [
            "## SmolLM2-135M-Instruct: factual recall",
            "",
            f"{r['n']} prompts the model answers (greedy first token = the expected answer; "
            f"{len(r['skipped'])} written ones before them skipped). All 46,080 MLP neurons (30 layers x 1536) "
            "ranked together, per prompt: "
            + " / ".join(x for x in ranked if x in SMOL_RELEVANCE)
            + " = relevance of the answer logit under that rule set (`components=True`); activation = |a| "
            "summed over positions; gradient x activation (= plain attribution patching's ranking of zero "
            "ablation); RelP = attribution patching of zero ablation with the gradient under the RelP rules "
            "(`patching.ablation.zero_ablation_estimate`); random = mean of 3 draws. Mean drop of p(answer) "
            "(share of prompts whose greedy answer changes) after ablating the top k.",
            "",
            "| k | " + " | ".join(ranked) + " |",
            "|---:|" + "---:|" * len(ranked),
        ]
        for j, k in enumerate(r["ks"]):
            cells = " | ".join(f"{r['mean_p_drop'][x][j]:.3f} ({r['answer_changed'][x][j]:.0%})" for x in ranked)
            lines.append(f"| {k} | {cells} |")
        lines += ["", "Prompts: " + "; ".join(f"{p!r} -> {a!r}" for p, a in r["prompts"]), ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(RESULTS, "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("recall", "smollm", "all"), default="all")
    parser.add_argument("--n", type=int, default=64, help="held-out recall sequences")
    parser.add_argument("--prompts", type=int, default=20, help="SmolLM2: stop after this many answered prompts")
    args = parser.parse_args()
    rows = []
    if args.part in ("recall", "all"):
        rows += recall_part(args.n)
    if args.part in ("smollm", "all"):
        rows += smollm_part(args.prompts)
    from lrp_llm.results.base import write_atomic

    old = json.loads(ROWS.read_text()) if ROWS.is_file() else []
    keep = [r for r in old if r["part"] not in {x["part"] for x in rows}]
    rows = keep + rows
    write_atomic(ROWS, json.dumps(rows, indent=1))
    write_table(rows)


if __name__ == "__main__":
    main()
