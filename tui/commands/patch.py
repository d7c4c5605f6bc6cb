"""``xai-tui patch``: activation-patching sweeps and RelP between a clean and a corrupted prompt."""

from __future__ import annotations

import argparse

from ..backend import BUNDLED_MODEL_NAME
from .common import MAX_LISTED, OutputFiles, add_model_args, add_output_args, int_range, load_model_from_args

SITES = ("resid", "attn", "mlp", "mixer", "head")
METRICS = ("logit_diff", "recovery", "kl")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "patch",
        help="activation patching and RelP: which layers and positions carry the answer",
        description=(
            "Patch every layer x position (and head) of the corrupted run with the clean run's activation "
            "(and back), and predict the same grid with RelP (LRP attribution patching). The prompts must have "
            "the same number of tokens."
        ),
    )
    add_model_args(p)
    g = p.add_argument_group("input")
    g.add_argument("--clean", required=True, help="the prompt whose answer is --answer")
    g.add_argument("--corrupted", required=True, help="the same prompt with the fact changed (same token count)")
    g.add_argument("--answer", required=True, help="the clean answer's first token, with its leading space (' Paris')")
    g.add_argument("--wrong", required=True, help="the corrupted answer's first token (' Rome')")
    g.add_argument("--chat", action="store_true", help="wrap both prompts in the model's chat template")
    m = p.add_argument_group("method")
    m.add_argument(
        "--sites", default="resid,attn,mlp", help="comma list of resid, attn, mlp, mixer, head (default resid,attn,mlp)"
    )
    m.add_argument(
        "--method", default="both", choices=["sweep", "relp", "both"], help="real sweep, RelP estimate, or both"
    )
    m.add_argument(
        "--direction",
        default="denoise",
        choices=["denoise", "noise", "both"],
        help="denoise: clean -> corrupted run (default); noise: corrupted -> clean run",
    )
    m.add_argument("--metrics", default="logit_diff,recovery,kl", help="comma list of logit_diff, recovery, kl")
    m.add_argument(
        "--engine", default="auto", choices=["auto", "stepper", "batched", "naive"], help="sweep engine (default auto)"
    )
    add_output_args(p)
    p.add_argument(
        "--top", type=int_range(0, MAX_LISTED), default=5, help="strongest sites listed per grid (default 5)"
    )


def _split(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    from lrp_llm.errors import InputError

    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise InputError(f"--{what} takes a comma list of {', '.join(allowed)}; got '{text}'")
    return items


def run(args: argparse.Namespace) -> int:
    from ..render import terminal

    sites = _split(args.sites, SITES, "sites")
    metrics = _split(args.metrics, METRICS, "metrics")
    outputs = OutputFiles.from_args(args)
    directions = ["denoise", "noise"] if args.direction == "both" else [args.direction]
    err = terminal(stderr=True)
    out = terminal()
    model, tokenizer = load_model_from_args(args, err)

    from lrp_llm.export.report import patching_report
    from patching.experiment import run_patching

    from ..render import progress_bar

    with progress_bar(err, disabled=args.quiet) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        result = run_patching(
            model,
            tokenizer,
            args.clean,
            args.corrupted,
            args.answer,
            args.wrong,
            sites=sites,
            method=args.method,
            directions=directions,
            metrics=metrics,
            engine=args.engine,
            chat=args.chat,
            model_name=args.model or BUNDLED_MODEL_NAME,
            progress=progress,
        )
    render_result(out, result, top=args.top)
    outputs.write(result, patching_report)
    return 0


def render_result(console, result, *, top: int = 5) -> None:
    from rich.table import Table
    from rich.text import Text

    from lrp_llm.text import compact, visible

    console.print(
        Text.assemble(("model ", "dim"), visible(result.model), ("  ", ""), (f"{result.seconds:.1f} s", "dim"))
    )
    console.print(
        Text.assemble(
            ("answer ", "dim"), (compact(result.answer), "bold green"), ("  wrong ", "dim"), compact(result.wrong)
        )
    )
    for name, b in result.baseline.items():
        console.print(
            f"{name:>9} run: logit diff {b['logit_diff']:+.3f}   p(answer) {b['p_answer']:.3f}   p(wrong) {b['p_wrong']:.3f}"
        )
    if top:
        # the real sweep when there is one, else the estimate; ranked by change from the unpatched run
        shown = "sweep" if any(g.method == "sweep" for g in result.grids) else "relp"
        table = Table(show_edge=False, header_style="bold", title=f"strongest sites ({shown}, recovery)")
        for col in ("direction", "site", "token", "recovery"):
            table.add_column(col, justify="right" if col == "recovery" else "left")
        for g in result.grids:
            if g.method != shown or g.metric != "recovery":
                continue
            for r, c, v in g.top(top, centre=result.unpatched(g)):
                token = compact(g.columns[c]) if g.kind != "head" else ""
                table.add_row(g.direction, g.site(r, c), token, f"{v:+.3f}")
        if table.row_count:
            console.print(table)
    if result.correlations:
        table = Table(show_edge=False, header_style="bold", title="attribution patching vs sweep (Pearson r)")
        for col in ("site", "direction", "method", "r"):
            table.add_column(col, justify="right" if col == "r" else "left")
        for c in result.correlations:
            table.add_row(str(c["kind"]), str(c["direction"]), str(c["method"]), f"{float(c['pearson_r']):.3f}")
        console.print(table)
