"""``xai-tui evaluate``: faithfulness of attribution methods on a data set (perturbation curves, ABPC)."""

from __future__ import annotations

import argparse

from ..backend import BUNDLED_MODEL_NAME
from .common import (
    MAX_BATCH,
    MAX_ITEMS,
    MAX_NEW_TOKENS,
    MAX_STEPS,
    OutputFiles,
    add_model_args,
    add_output_args,
    int_range,
    load_model_from_args,
)

STRATEGIES = ("zero", "neutral", "delete")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure how faithful each attribution method is on a data set",
        description="Explain every item of a JSONL data set with each method, then remove the input tokens "
        "in order of relevance (most relevant first, MoRF, and least relevant first, LeRF) and follow the "
        "explained logit. Reports the area between the two curves (ABPC; larger = more faithful) with its "
        "95% confidence interval, the insertion / deletion areas of the explained probability, ERASER "
        "comprehensiveness / sufficiency (top 1-50% of tokens) and the time per explanation. Data: one JSON object per line, QA items "
        '{"context": ..., "question": ..., "answer": ...} or next-token items {"text": ..., "answer": " ..."}; '
        "optional 'id' and 'evidence' (the span of the context that holds the answer). Ctrl-C stops cleanly. Sharded over processes / GPUs: "
        "`torchrun --nproc-per-node N -m tui.cli evaluate ...` (item i on process i % N, gloo on CPU, nccl "
        "on GPU: each process on its own GPU with --device cuda); process 0 merges the parts into the result "
        "one process gives, and alone prints the table and writes --json / --html.",
    )
    add_model_args(p)
    g = p.add_argument_group("evaluation")
    g.add_argument("--data", required=True, metavar="FILE.jsonl", help="the items (e.g. benchmarks/data/qa.jsonl)")
    g.add_argument(
        "--methods",
        metavar="LIST",
        help="comma-separated: attnlrp, cp-lrp, mambalrp, grad-x-input, saliency, integrated-gradients[:STEPS], hidden-attention (Mamba), "
        "random (default: the model's LRP method, grad-x-input, random)",
    )
    g.add_argument("--limit", type=int_range(1, MAX_ITEMS), metavar="N", help="use only the first N items")
    g.add_argument("--strategy", choices=STRATEGIES, default="zero", help="how a token is removed (default: zero)")
    g.add_argument(
        "--steps",
        type=int_range(1, MAX_STEPS),
        default=10,
        help="points per curve after the start (default 10: 10%% of tokens each)",
    )
    g.add_argument(
        "--ig-steps", type=int_range(1, MAX_STEPS), default=32, help="integrated-gradients steps when not given as :N"
    )
    g.add_argument("--neutral", default=" ", metavar="TEXT", help="replacement token of --strategy neutral")
    g.add_argument(
        "--removable",
        choices=("content", "all"),
        default="content",
        help="tokens a perturbation may remove: content (default: what the user wrote and the answer so far) or "
        "all (also the chat template's role headers and default system prompt; special tokens never)",
    )
    g.add_argument(
        "--batch-size", type=int_range(1, MAX_BATCH), default=16, help="perturbed inputs per forward pass (default 16)"
    )
    g.add_argument(
        "--only-answered",
        action="store_true",
        help="leave out items the model does not answer (default: force the expected answer and explain it)",
    )
    g.add_argument(
        "--max-new-tokens",
        type=int_range(1, MAX_NEW_TOKENS),
        default=32,
        help="answer length searched for the expected answer",
    )
    add_output_args(p)


def run(args: argparse.Namespace) -> int:
    from lrp_llm.analyses.distributed import launched_world, process_group

    rank, world = launched_world()
    if world > 1:
        if getattr(args, "device_map", None):
            from lrp_llm.errors import InputError

            raise InputError(
                "--device-map spreads one model over the GPUs; a torchrun launch runs one model per process"
            )
        args.quiet = args.quiet or rank > 0  # one progress bar: process 0's
    with process_group() as group:
        return _run(args, group)


def _run(args: argparse.Namespace, group) -> int:
    from ..render import terminal

    outputs = OutputFiles.from_args(args)
    from lrp_llm.analyses.evaluate import load_items
    from lrp_llm.methods import parse_method

    items = load_items(args.data, limit=args.limit)  # bad data fails before the model loads
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    for m in methods or []:
        parse_method(m)
    err = terminal(stderr=True)
    out = terminal()
    model, tokenizer = load_model_from_args(args, err)
    from lrp_llm.analyses.evaluate import check_methods, evaluate
    from lrp_llm.export.report import evaluation_report
    from lrp_llm.methods import default_method

    if methods is None:
        methods = [default_method(model), "grad-x-input", "random"]
    check_methods(model, methods)

    from ..render import progress_bar

    with progress_bar(err, disabled=args.quiet) as bar:
        tasks: dict[str, object] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                for t in tasks.values():
                    bar.update(t, visible=False)
                label = "answering" if stage == "answering" else f"explaining ({len(methods)} methods)"
                tasks[stage] = bar.add_task(label, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        evaluation = evaluate(
            model,
            tokenizer,
            items,
            methods,
            strategy=args.strategy,
            steps=args.steps,
            ig_steps=args.ig_steps,
            neutral=args.neutral,
            batch_size=args.batch_size,
            only_answered=args.only_answered,
            removable=args.removable,
            max_new_tokens=args.max_new_tokens,
            model_name=args.model or BUNDLED_MODEL_NAME,
            progress=progress,
            shard=group if group.world > 1 else None,
        )
    if group.world > 1:  # every part (the Evaluation of its items, unrounded) to process 0
        from lrp_llm.analyses.evaluate import merge_evaluations

        parts = group.all_gather(evaluation)
        if not group.root:
            return 0
        evaluation = merge_evaluations(parts)
    evaluation.meta["data"] = str(args.data)
    render_evaluation(out, evaluation)
    outputs.write(evaluation, evaluation_report)
    return 0


def _timing(meta) -> tuple:
    """``("  time ", "dim"), "N s, M s / item"`` from an evaluation's meta (nothing for files without it)."""
    seconds, per_item = meta.get("seconds"), meta.get("seconds_per_item")
    if not isinstance(seconds, int | float) or not isinstance(per_item, int | float):
        return ()
    return (("  time ", "dim"), f"{seconds:.0f} s, {per_item:.2f} s / item")


def render_evaluation(console, evaluation) -> None:
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    from lrp_llm.text import visible

    ev = evaluation
    console.print(
        Text.assemble(
            ("model ", "dim"),
            visible(ev.model),
            ("  items ", "dim"),
            f"{ev.n_items} ({ev.n_answered} answered by the model)",
            ("  removal ", "dim"),
            f"{ev.strategy}, {ev.steps} steps, {ev.meta.get('removable') or 'all'} tokens",
            *_timing(ev.meta),
        )
    )
    summary = ev.summary()
    if not summary:
        console.print("no item was evaluated (none answered; drop --only-answered to explain forced answers)")
        return
    loc = any(s.n_localised for s in summary)
    columns = ["method", "n", "ABPC ± 95% CI", "ABPC (p)", "MoRF / LeRF AUC", "ins. / del. (p)", "comp. / suff."]
    columns += ["s / expl."]
    if loc:
        columns += ["top-1", "top-5", "mass"]
    best = max(s.abpc for s in summary)

    def f(x, d=3):
        return "–" if x is None or x != x else f"{x:.{d}f}"

    rows = []
    for s in summary:
        row = [
            Text(visible(s.method)),
            Text(str(s.n)),
            Text(f"{f(s.abpc)} ± {f(s.abpc_ci)}", style="bold green" if s.abpc == best else ""),
            Text(f(s.abpc_prob)),
            Text(f"{f(s.morf_auc, 2)} / {f(s.lerf_auc, 2)}"),
            Text(f"{f(s.insertion_auc)} / {f(s.deletion_auc)}"),
            Text(f"{f(s.comprehensiveness)} / {f(s.sufficiency)}"),
            Text(f(s.seconds, 2)),
        ]
        if loc:
            row += [Text(f(s.top1, 2)), Text(f(s.top5, 2)), Text(f(s.mass, 2))]
        rows.append(row)
    table = Table(show_edge=False, header_style="bold")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    # the table's natural width (a measure at the console's width would be capped at it)
    if Measurement.get(console, console.options.update_width(10_000), table).maximum <= console.width:
        console.print(table)
    else:  # narrower than the table (or piped at 80 columns): one block per method, every number kept
        label_width = max(len(c) for c in columns[1:])
        for row in rows:
            console.print(Text.assemble(row[0], style="bold"), soft_wrap=True)
            for col, value in zip(columns[1:], row[1:]):
                console.print(Text.assemble(f"  {col:<{label_width}}  ", value), soft_wrap=True)
    console.print(
        Text(
            "ABPC = area between the LeRF and MoRF curves of the explained logit (larger = more faithful; "
            "random ≈ 0). ins. / del.: area under the explained probability as tokens are restored / removed, "
            "most relevant first (higher / lower = more faithful). comp. / suff.: ERASER comprehensiveness / "
            "sufficiency, the probability drop without / with only the top 1, 5, 10, 20, 50 % of tokens, averaged "
            "(higher / lower = more faithful). top-1 (the pointing game) / top-5 / mass: the most relevant token / "
            "one of the five most relevant lies on the evidence / share of positive relevance on it.",
            style="dim",
        )
    )
