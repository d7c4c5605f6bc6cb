"""Which items of an evaluation data set does a model answer?

    .venv/bin/python -m benchmarks.check_data benchmarks/data/qa.jsonl [--model PATH] [--write-answered OUT]

Prints one line per item (answered or not, the model's answer) and the accuracy. With
``--write-answered`` the items the model answers are written (unchanged lines) to OUT:
that is how the shipped sets in ``benchmarks/data/`` were filtered from the hand-written
candidates for SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="+", help="JSONL files")
    ap.add_argument("--model", help="checkpoint (default: the bundled SmolLM2-135M-Instruct)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, help="torch threads (1 is fastest on a busy machine)")
    ap.add_argument("--write-answered", metavar="OUT", help="write the answered items here")
    args = ap.parse_args(argv)
    import torch

    from lrp_llm.analyses.evaluate import jsonl_lines, load_items, prepare_item
    from lrp_llm.checkpoints.loading import load_model
    from lrp_llm.results.base import write_atomic

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    kept: list[str] = []
    total = answered = 0
    t0 = time.perf_counter()
    for path in args.data:
        items = load_items(path)
        by_id = {json.loads(ln).get("id"): ln for _, ln in jsonl_lines(path)}
        for item in items:
            prep = prepare_item(model, tok, item, max_new_tokens=args.max_new_tokens)
            total += 1
            answered += prep.answered
            mark = "ok " if prep.answered else "NO "
            extra = f"ev={len(prep.evidence)} d={prep.distance}" if prep.evidence else "ev=0"
            print(
                f"{mark} {item.id:10s} {len(prep.input_ids):5d} tok {extra:14s} {item.answer!r:18s} -> {prep.model_answer[:70]!r}"
            )
            if prep.answered:
                kept.append(by_id.get(item.id) or json.dumps({"id": item.id}))
    print(f"answered {answered}/{total} in {time.perf_counter() - t0:.0f} s")
    if args.write_answered:
        write_atomic(args.write_answered, "\n".join(kept) + "\n")
        print(f"wrote {len(kept)} items to {args.write_answered}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
