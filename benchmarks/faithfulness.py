"""Faithfulness of every attribution method on SmolLM2: perturbation curves, ABPC, time.

    .venv/bin/python -m benchmarks.faithfulness [--limit N] [--steps 10] [--strategy zero] [--threads N]

For each data set (QA items of ``benchmarks/data/qa.jsonl``, next-token items of
``next_token.jsonl``), the items the model answers are explained with each method and
scored by :func:`lrp_llm.analyses.evaluate.evaluate`: tokens are removed in order of relevance,
most relevant first (MoRF) and least relevant first (LeRF), the explained logit is
followed, and ABPC = AUC(LeRF) - AUC(MoRF) (logit units; larger is better; random ~ 0)
is reported with its 95 % confidence interval, the evidence localisation (top-1 hit,
relevance mass on the answer's span in the context), insertion / deletion AUC of the
explained probability, ERASER comprehensiveness / sufficiency (AOPC over the top 1, 5, 10,
20, 50 % of the tokens) and the seconds per explanation,
all methods alternating item by item in one process. Writes
benchmarks/results/faithfulness.md (and, with --json, every per-item score).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import RESULTS, machine, write_table

DATA = Path(__file__).resolve().parent / "data"
METHODS = (
    "attnlrp",
    "cp-lrp",
    "attnlrp-qk-held",
    "attnlrp-qk-late",
    "attnlrp-eps",
    "attnlrp-sink",
    "integrated-gradients:16",
    "grad-x-input",
    "saliency",
    "random",
)
DATA_SETS = ("qa.jsonl", "next_token.jsonl", "long.jsonl")


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description="faithfulness (ABPC) of every method on SmolLM2")
    ap.add_argument("--model", help="checkpoint (default: the bundled SmolLM2-135M-Instruct)")
    ap.add_argument(
        "--data", default=",".join(str(DATA / name) for name in DATA_SETS), help="comma-separated JSONL files"
    )
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--limit", type=int, help="items per data file (default: all)")
    ap.add_argument(
        "--max-tokens",
        type=int,
        help="leave out items whose text (context and question, or text) is longer than this many tokens; the "
        "cost of scoring an item grows with the square of its length",
    )
    ap.add_argument("--steps", type=int, default=10, help="perturbation steps per curve")
    ap.add_argument("--strategy", default="zero", choices=["zero", "neutral", "delete"])
    ap.add_argument("--threads", type=int, help="torch threads (1 is steadier on a busy machine)")
    ap.add_argument("--out", type=Path, help="folder for faithfulness.md (default benchmarks/results)")
    ap.add_argument(
        "--json",
        type=Path,
        default=RESULTS / "faithfulness.json",
        help="every per-item score (one JSON per data file: NAME.<data stem>.json; default "
        "benchmarks/results/faithfulness.json, read by benchmarks.choose_default)",
    )
    ap.add_argument("--removable", default="content", choices=["content", "all"], help="tokens a removal may take")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="a data set whose per-item JSON exists is read from it instead of evaluated again (the tables are "
        "rebuilt from the saved scores; runs split over several sittings or --limit runs combine this way)",
    )
    args = ap.parse_args(argv)

    import torch

    from lrp_llm.analyses.evaluate import Evaluation, evaluate, load_items
    from lrp_llm.checkpoints.loading import demo_model_path, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded: list = []  # (model, tokenizer), loaded when a data set is evaluated
    model_name = Path(args.model or demo_model_path()).name
    methods = [m for m in args.methods.split(",") if m]
    sections: list[tuple[str, list[list[str]], str]] = []
    seconds: list[float] = []
    for path in [Path(p) for p in args.data.split(",") if p]:
        saved = args.json.with_suffix(f".{path.stem}.json")
        if args.reuse and saved.exists():
            ev = Evaluation.load(saved)
            print(f"{path.name}: read from {saved}", flush=True)
        else:
            if not loaded:
                loaded.append(load_model(args.model, dtype="float32"))
            model, tok = loaded[0]
            items = load_items(path, limit=args.limit)
            if args.max_tokens is not None:
                items = [it for it in items if _text_tokens(tok, it) <= args.max_tokens]
            ev = evaluate(
                model,
                tok,
                items,
                methods,
                strategy=args.strategy,
                steps=args.steps,
                only_answered=True,
                removable=args.removable,
                model_name=model_name,
                progress=_printer(path.name),
            )
            ev.save(saved)
        seconds.append(float(ev.meta.get("seconds") or 0.0))
        summary = ev.summary()
        gxi = next((s.seconds for s in summary if s.method == "grad-x-input"), None)
        rows = []
        for s in sorted(summary, key=lambda s: -s.abpc):
            rows.append(
                [
                    s.method,
                    str(s.n),
                    f"**{s.abpc:.2f}** ± {s.abpc_ci:.2f}",
                    f"{s.abpc_prob:.3f}",
                    f"{s.morf_auc:.2f}",
                    f"{s.lerf_auc:.2f}",
                    _num(s.insertion_auc, 3),
                    _num(s.deletion_auc, 3),
                    _num(s.comprehensiveness, 3),
                    _num(s.sufficiency, 3),
                    "–" if s.top1 is None else f"{s.top1:.2f}",
                    "–" if s.top5 is None else f"{s.top5:.2f}",
                    "–" if s.mass is None else f"{s.mass:.2f}",
                    f"{s.seconds:.3f}",
                    "–" if not gxi else f"{s.seconds / gxi:.2f}",
                ]
            )
        n_tokens = [r.n_tokens for r in ev.results] or [0]
        about = (
            f"`{path.name}`: {ev.n_answered} of {ev.n_items} items answered by the model and evaluated; "
            f"{min(n_tokens)}-{max(n_tokens)} tokens; {ev.meta['seconds']:.0f} s in all, "
            f"{ev.meta['seconds_per_item']:.2f} s per item ({len(ev.methods)} methods: answering, explaining, scoring)"
        )
        sections.append((path.name, rows, about))
    header = [
        "method",
        "n",
        "ABPC (logit) ± 95 % CI",
        "ABPC (prob.)",
        "AUC MoRF",
        "AUC LeRF",
        "insertion AUC (prob.)",
        "deletion AUC (prob.)",
        "comprehensiveness",
        "sufficiency",
        "top-1 on evidence",
        "top-5 on evidence",
        "evidence mass",
        "s / explanation",
        "time / grad x input",
    ]
    notes = [
        f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d')}. Model: {model_name}, float32. "
        f"Total {sum(seconds):.0f} s of evaluation.",
        f"Removal: `{args.strategy}` ({'zero input embedding, as in the AttnLRP paper' if args.strategy == 'zero' else args.strategy}), "
        f"{args.steps} steps per curve (each removes {100 // args.steps} % of the removable tokens). Removable: "
        + (
            "the content (what the user wrote and the answer so far; the chat template's markup, role headers and "
            "default system prompt are never removed). "
            if args.removable == "content"
            else "every token but the special ones. "
        )
        + "ABPC = AUC(LeRF) - AUC(MoRF) of the explained logit over the "
        "share of tokens removed; larger = more faithful, random ordering ~ 0. Rows sorted by ABPC.",
        "Evidence = the answer's span in the context (QA) or the marked cue word (next-token): top-1 = the most "
        "relevant token lies on it (the pointing game), top-5 = one of the five most relevant does, mass = share of "
        "positive relevance on it. Only items the model answers are used.",
        "Beyond ABPC, on the explained token's probability and from the same removal batches: insertion AUC "
        "(every removable token removed, then restored most relevant first; higher = more faithful), deletion AUC "
        "(the MoRF probability curve; lower = more faithful), ERASER comprehensiveness and sufficiency = mean over "
        "k in {1, 5, 10, 20, 50} % of p(x) - p(x without its top ceil(k n / 100) tokens) and of p(x) - p(only "
        "those kept) (higher / lower = more faithful).",
        "Seconds per explanation: one call of `lrp_llm.relevance` (forward + backward; IG: one forward per step, "
        "batched by 8), methods alternating item by item in one process; `integrated-gradients:N` = N steps. "
        "Per item (each section's line): everything, i.e. the answer's generation, every method's explanation and "
        "the perturbation scoring (all methods' removal sets of an item in one pool, each perturbed input computed "
        "from its first removed token on after the unperturbed input's cached keys and values).",
    ]
    first_name, first_rows, first_about = sections[0]
    path = write_table(
        "faithfulness",
        "Faithfulness of the attribution methods on SmolLM2-135M-Instruct",
        header,
        first_rows,
        [*notes, first_about],
        out_dir=args.out,
    )
    extra = []
    for _name, rows, about in sections[1:]:
        extra += ["", f"## {about}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        extra += ["| " + " | ".join(r) + " |" for r in rows]
    if extra:
        with path.open("a") as f:
            f.write("\n".join(extra) + "\n")
        print("\n".join(extra))
    return path


def _num(x: float | None, digits: int) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def _text_tokens(tokenizer, item) -> int:
    """Tokens of an item's own text (a QA item's context and question, a next-token item's text)."""
    text = item.text if item.kind != "qa" else f"{item.context or ''}\n{item.question}"
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _printer(name: str):
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - last[0] > 30:
            last[0] = now
            print(f"{name}: {stage} {done}/{total}", flush=True)

    return progress


if __name__ == "__main__":
    main()
