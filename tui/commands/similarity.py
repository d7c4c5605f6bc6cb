"""``xai-tui similarity``: why an embedding model finds two texts similar (BiLRP).

One pair (``--a``, ``--b``) or a query against a file of texts (``--b-file``, one per
line: ranked by cosine similarity, each explained; the query's map is computed once).
"""

from __future__ import annotations

import argparse

from lrp_llm.methods import method_names

from ..backend import BUNDLED_ENCODER_NAME
from .common import MAX_LISTED, OutputFiles, add_model_args, add_output_args, int_range, load_model_from_args

SIMILARITY_METHODS = method_names("encoder")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "similarity",
        help="explain why two texts are similar to an embedding model (BiLRP)",
        description="Token-pair interactions that make up the similarity of two sentence embeddings "
        "(BiLRP, Eberle et al. 2022; Vasileiou & Eberle 2024). Rows: tokens of A; columns: tokens of B.",
    )
    add_model_args(p, what="the bundled all-MiniLM-L6-v2")
    g = p.add_argument_group("input")
    g.add_argument("--a", required=True, metavar="TEXT", help="the first text (the query in corpus mode)")
    b = g.add_mutually_exclusive_group(required=True)
    b.add_argument("--b", metavar="TEXT", help="the second text")
    b.add_argument("--b-file", metavar="FILE", help="texts to rank against --a, one per line (empty lines skipped)")
    m = p.add_argument_group("method")
    m.add_argument("--method", default="bilrp", choices=SIMILARITY_METHODS, help="interaction method (default: bilrp)")
    m.add_argument(
        "--rules", default="cp-lrp", choices=("cp-lrp", "attnlrp"), help="LRP rules for bilrp (default: cp-lrp)"
    )
    m.add_argument(
        "--pooling",
        choices=("mean", "cls", "last"),
        help="how token states become the embedding (default: the model's)",
    )
    m.add_argument("--mode", default="cosine", choices=("cosine", "dot"), help="score the interactions add up to")
    add_output_args(p)
    v = p.add_argument_group("terminal view")
    v.add_argument(
        "--top", type=int_range(0, MAX_LISTED), default=8, help="interacting pairs listed per explanation (default 8)"
    )
    v.add_argument("--no-matrix", dest="matrix", action="store_false", help="do not print the interaction matrix")
    v.add_argument(
        "--show",
        type=int_range(0, MAX_LISTED),
        default=3,
        metavar="N",
        help="corpus mode: explanations printed in full (default 3)",
    )


def _read_texts(path: str) -> tuple[list[str], list[int]]:
    from pathlib import Path

    from lrp_llm.errors import InputError

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"--b-file {p}: no such file; pass a text file with one text per line")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"--b-file {p} is not UTF-8 text") from None
    texts, numbers = [], []
    for k, line in enumerate(lines):
        if line.strip():
            texts.append(line.strip())
            numbers.append(k + 1)
    if not texts:
        raise InputError(f"--b-file {p} has no non-empty lines")
    return texts, numbers


def run(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from lrp_llm.errors import InputError

    from ..render import terminal

    if not args.a.strip() or (args.b is not None and not args.b.strip()):
        raise InputError("a text is empty; pass some words with --a and --b")
    texts, numbers = _read_texts(args.b_file) if args.b_file else ([args.b], [1])
    outputs = OutputFiles.from_args(args)
    err = terminal(stderr=True)
    out = terminal()

    from lrp_llm.checkpoints.loading import demo_embedding_path

    name = args.model or BUNDLED_ENCODER_NAME
    if args.model is None:
        args.model = str(demo_embedding_path())
    model, tokenizer = load_model_from_args(args, err)

    from lrp_llm.analyses.bilrp import SimilarityExplainer
    from lrp_llm.export.report import similarity_report

    from ..render import progress_bar
    from ..render_similarity import ranking_table, render_similarity

    explainer = SimilarityExplainer(
        model, tokenizer, method=args.method, rules=args.rules, pooling=args.pooling, mode=args.mode, model_name=name
    )
    if args.b_file is None:
        with err.status("explaining ...") if not args.quiet else nullcontext():
            results = [explainer.explain(args.a, texts[0])]
        render_similarity(out, results[0], top=args.top, matrix=args.matrix)
    else:
        with progress_bar(err, disabled=args.quiet) as bar:
            task = bar.add_task("explaining", total=len(texts))
            results = explainer.rank(args.a, texts, progress=lambda done, total: bar.update(task, completed=done))
        for e in results:
            e.meta["line"] = numbers[int(e.meta["index"])]
        out.print(ranking_table(results, texts))
        for e in results[: args.show]:
            out.print()
            render_similarity(out, e, top=args.top, matrix=args.matrix)
    if args.b_file is None:
        outputs.write(results[0], similarity_report)
    else:
        import json

        doc = {"schema": "xai-tui/similarity-ranking/1", "a": args.a, "results": [e.to_dict() for e in results]}
        outputs.write(results, similarity_report, json_text=json.dumps(doc, indent=1) if outputs.json else None)
    return 0
