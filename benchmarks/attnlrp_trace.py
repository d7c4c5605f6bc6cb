"""Where AttnLRP and CP-LRP part ways on SmolLM2: the layer-by-layer relevance trace.

    .venv/bin/python -m benchmarks.attnlrp_trace [--limit 16] [--data benchmarks/data/qa.jsonl]

For each QA item the model answers, the answer token is explained with AttnLRP, CP-LRP and the
variant that holds Q/K constant but keeps AttnLRP's other rules (``attnlrp-qk-held``), with
``components=True``: the relevance of the residual stream at every depth (row 0 = the input
embeddings, row i + 1 = the output of block i), per position. Per depth and method, averaged
over items:

- ``total``: the depth's relevance summed over positions, / the explained logit (1 = conserved);
- ``first``: share of |relevance| on the first token (``<|im_start|>``, the attention sink);
- ``template``: share on the other tokens the chat template wrote (role headers, default system prompt);
- ``evidence``: share on the answer's evidence span in the context;
- ``rho``: Spearman correlation of the method's relevance with CP-LRP's over the content tokens.

Also per block: the relevance of the attention output and of the MLP output (/ logit). Writes
benchmarks/results/attnlrp_trace.md; docs/faithful-default.md reads it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, write_table

DATA = Path(__file__).resolve().parent / "data"
METHODS = ("attnlrp", "cp-lrp", "attnlrp-qk-held")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(np.float64)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    d = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / d) if d else float("nan")


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description="layer-by-layer relevance trace of AttnLRP vs CP-LRP on SmolLM2")
    ap.add_argument("--data", default=str(DATA / "qa.jsonl"))
    ap.add_argument("--limit", type=int, default=16, help="items read from the data file (the answered ones are used)")
    ap.add_argument("--out", type=Path, help="folder for attnlrp_trace.md (default benchmarks/results)")
    args = ap.parse_args(argv)

    from lrp_llm.analyses.evaluate import load_items, prepare_item
    from lrp_llm.checkpoints.loading import load_model
    from lrp_llm.engines.causal_lm import relevance
    from lrp_llm.engines.generation import build_prompt

    t_start = time.perf_counter()
    model, tok = load_model(None, dtype="float32")
    stats: dict[str, dict[str, list[np.ndarray]]] = {m: {} for m in METHODS}
    used = 0
    for item in load_items(args.data, limit=args.limit):
        prep = prepare_item(model, tok, item)
        if not prep.answered or not prep.evidence:
            continue
        used += 1
        _, template = build_prompt(tok, item.question, item.context or None, chat=True)
        p = prep.position
        first = np.zeros(p, dtype=bool)
        first[0] = True
        tmpl = np.zeros(p, dtype=bool)
        tmpl[[t for t in template if 0 < t < p]] = True
        evid = np.zeros(p, dtype=bool)
        evid[prep.evidence] = True
        content = np.asarray(prep.candidates)
        traces = {}
        for m in METHODS:
            out = relevance(model, prep.input_ids, [p], method=m, components=True)
            comp = out["components"][0]
            logit = float(out["logits"][0])
            trace = comp.trace.astype(np.float64)[:, :p]  # (layers + 1, p)
            traces[m] = trace
            mag = np.abs(trace).sum(-1, keepdims=True)
            mag[mag == 0] = 1.0
            s = stats[m]
            s.setdefault("total", []).append(trace.sum(-1) / logit)
            s.setdefault("first", []).append((np.abs(trace) * first).sum(-1) / mag[:, 0])
            s.setdefault("template", []).append((np.abs(trace) * tmpl).sum(-1) / mag[:, 0])
            s.setdefault("evidence", []).append((np.abs(trace) * evid).sum(-1) / mag[:, 0])
            s.setdefault("first_signed", []).append(trace[:, 0] / logit)
            s.setdefault("attn", []).append(np.array([np.nan if v is None else v for v in comp.attn]) / logit)
            s.setdefault("mlp", []).append(np.array([np.nan if v is None else v for v in comp.mlp]) / logit)
        for m in METHODS:
            rho = [_spearman(traces[m][d, content], traces["cp-lrp"][d, content]) for d in range(traces[m].shape[0])]
            stats[m].setdefault("rho", []).append(np.asarray(rho))
    mean = {m: {k: np.nanmean(np.stack(v), axis=0) for k, v in s.items()} for m, s in stats.items()}
    depth = mean[METHODS[0]]["total"].shape[0]
    header = ["depth"]
    for m in METHODS:
        header += [f"{m} total", f"{m} first", f"{m} template", f"{m} evidence"]
    header += [f"rho({m}, cp-lrp)" for m in METHODS if m != "cp-lrp"]
    rows = []
    for d in range(depth):
        row = ["input" if d == 0 else f"block {d - 1}"]
        for m in METHODS:
            q = mean[m]
            row += [
                f"{q['total'][d]:.2f}",
                f"{q['first'][d]:.2f}",
                f"{q['template'][d]:.2f}",
                f"{q['evidence'][d]:.2f}",
            ]
        row += [f"{mean[m]['rho'][d]:.2f}" for m in METHODS if m != "cp-lrp"]
        rows.append(row)
    notes = [
        f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d')}. SmolLM2-135M-Instruct, float32; {used} QA items "
        f"of `{Path(args.data).name}` (the first {args.limit}, those the model answers and that have evidence); "
        f"{time.perf_counter() - t_start:.0f} s.",
        "Depth `input` = the input embeddings (the heatmap the user sees), `block i` = the residual stream after block i "
        "(block 29 feeds the final norm and the head). total = relevance summed over positions / the explained "
        "logit; first / template / evidence = share of |relevance| on the first token (`<|im_start|>`), on the "
        "chat template's other tokens, on the answer's evidence span; rho = Spearman correlation with CP-LRP over "
        "the content tokens. Means over items.",
    ]
    path = write_table(
        "attnlrp_trace",
        "Layer-by-layer relevance trace: AttnLRP vs CP-LRP on SmolLM2",
        header,
        rows,
        notes,
        out_dir=args.out,
    )
    parts = ["", "## Relevance of each block's attention and MLP output / logit (mean over items)", ""]
    head = ["block"] + [f"{m} {k}" for m in METHODS for k in ("attn", "mlp")]
    parts += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for b in range(depth - 1):
        parts.append(
            "| " + " | ".join([str(b)] + [f"{mean[m][k][b]:.3f}" for m in METHODS for k in ("attn", "mlp")]) + " |"
        )
    with path.open("a") as f:
        f.write("\n".join(parts) + "\n")
    print("\n".join(parts))
    return path


if __name__ == "__main__":
    main()
