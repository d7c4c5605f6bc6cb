"""Cost of the corpus index on SmolLM2: tokens per second, database size, time to the first snippet.

    .venv/bin/python -m benchmarks.corpus_index [--layer 15] [--kind neuron] [--limit 40] [--threads N]

Builds the index of one layer of the bundled SmolLM2-135M-Instruct over the shipped corpus
(``lrp_llm/data/corpus/corpus.txt``; ``--limit N``: its first N windows, the store still holds every
window) into a fresh database, then reopens it and times :func:`top_contexts` from opening the database
to the first snippet, in this process and as ``xai-tui components top`` in a fresh one. Reports wall and
CPU seconds (``time.process_time``: steadier when other jobs share the machine) and writes
benchmarks/results/corpus_index.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from benchmarks.common import load_note, machine, write_table


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description="corpus index build speed and database size on SmolLM2")
    ap.add_argument("--model", help="checkpoint (default: the bundled SmolLM2-135M-Instruct)")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--kind", default="neuron", choices=("neuron", "head"))
    ap.add_argument("--limit", type=int, help="windows to process (default: the whole corpus)")
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--top-n", type=int, default=20)
    ap.add_argument("--threads", type=int, help="torch threads")
    ap.add_argument("--out", type=Path, help="folder for corpus_index.md (default benchmarks/results)")
    args = ap.parse_args(argv)

    import torch

    import lrp_llm
    from lrp_llm.analyses import corpus_index as ci

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = lrp_llm.load_model(args.model)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "index.sqlite"
        wall, cpu = time.perf_counter(), time.process_time()
        result = ci.build(
            model,
            tokenizer,
            None,
            args.layer,
            args.kind,
            db=db,
            top_n=args.top_n,
            window=args.window,
            limit=args.limit,
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        load_after = os.getloadavg()[0]
        size = db.stat().st_size
        unit = "mlp.neuron" if args.kind == "neuron" else "attn.head"
        site = f"layer.{args.layer}.{unit}.3"
        first = time.perf_counter()
        snippets = ci.top_contexts(db, site, k=10)
        first = time.perf_counter() - first
        cli = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "tui.cli", "components", "top", site, "--db", str(db)],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        cli = time.perf_counter() - cli
        if proc.returncode != 0 or not snippets or site not in proc.stdout:
            raise SystemExit(f"the query failed: {proc.stderr.strip()}")
        example = snippets[0].text(("[[", "]]")).replace("|", "\\|").replace("\n", " ")
    n_windows = result.done
    rows = [
        ["windows processed (of the corpus)", f"{n_windows} of {result.windows}"],
        ["tokens processed", f"{result.tokens}"],
        ["wall seconds (build)", f"{wall:.1f}"],
        ["CPU seconds (build)", f"{cpu:.1f}"],
        ["tokens per wall second", f"{result.tokens / wall:.1f}"],
        ["tokens per CPU second", f"{result.tokens / cpu:.1f}"],
        ["database size (MB)", f"{size / 1e6:.2f}"],
        ["open to first snippet, in process (s)", f"{first:.3f}"],
        ["`xai-tui components top` in a fresh process (s, with imports)", f"{cli:.2f}"],
    ]
    notes = [
        f"Machine: {machine()}. Model: SmolLM2-135M-Instruct (bundled, float32), AttnLRP. Measured {date.today()}; "
        f"{load_note(load_before, load_after)}.",
        f"Layer {args.layer}, {args.kind}s, windows of {args.window} tokens, top {args.top_n} per unit and score. "
        "Per window: one forward pass and one backward pass from the summed predicted logits to the layer.",
        "The database holds every window of the corpus (its text and tokens) even when only the first are processed; "
        "the top entries are bounded by units x top-n x 2 and do not grow with the corpus.",
        f"Best relevance context of {site}: {example}",
    ]
    if args.limit:
        total_tokens = sum(
            len(w.ids) for w in ci.make_windows(tokenizer, ci.read_passages([ci.shipped_corpus()]), args.window)
        )
        notes.append(
            f"Only the first {args.limit} windows: the whole corpus ({result.windows} windows, {total_tokens} tokens) "
            f"would take about {total_tokens / (result.tokens / cpu) / 60:.0f} CPU minutes at this rate, "
            "more than this benchmark's budget on a shared 2-core machine."
        )
    return write_table(
        "corpus_index", "Corpus index build (SmolLM2)", ["measure", "value"], rows, notes, out_dir=args.out
    )


if __name__ == "__main__":
    main()
