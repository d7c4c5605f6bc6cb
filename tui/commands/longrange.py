"""``xai-tui longrange``: how far back into a long document does each answer token look?"""

from __future__ import annotations

import argparse

from lrp_llm.methods import METHODS

from ..backend import BUNDLED_MODEL_NAME
from .common import (
    MAX_DISTANCE,
    MAX_LISTED,
    MAX_NEW_TOKENS,
    MAX_STEPS,
    OutputFiles,
    add_model_args,
    add_output_args,
    fraction_range,
    int_range,
    load_model_from_args,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "longrange",
        help="relevance by token distance over a long document",
        description="Continue a long text (--file) by greedy generation (or a forced --target), explain the "
        "answer tokens and show how the relevance is spread over token distance: a log2 histogram, the "
        "share of |relevance| beyond 100 and 1000 tokens, the farthest clearly relevant token and the "
        "most relevant far tokens.",
    )
    add_model_args(p)
    g = p.add_argument_group("input")
    g.add_argument("--file", required=True, metavar="TEXTFILE", help="the document (UTF-8 text), used as it is")
    target = g.add_mutually_exclusive_group()
    target.add_argument(
        "--generate",
        type=int_range(1, MAX_NEW_TOKENS),
        metavar="N",
        help="explain a greedy answer of N tokens (default 1)",
    )
    target.add_argument("--target", help="explain this forced continuation instead of generating")
    m = p.add_argument_group("method")
    m.add_argument("--method", choices=METHODS, help="attribution method (default: the family's LRP method)")
    m.add_argument("--steps", type=int_range(1, MAX_STEPS), default=32, help="integrated-gradients steps (default 32)")
    v = add_output_args(p, html=False, json_help="write the explanation (with long-range statistics) as JSON")
    v.add_argument(
        "--far",
        type=int_range(0, MAX_DISTANCE),
        default=100,
        metavar="D",
        help="far tokens are more than D back (default 100)",
    )
    v.add_argument(
        "--top", type=int_range(0, MAX_LISTED), default=5, help="far tokens listed per answer token (default 5)"
    )
    v.add_argument(
        "--fraction",
        type=fraction_range(0.0, 1.0),
        default=0.1,
        help="farthest token with |relevance| >= this x max (default 0.1)",
    )


def _read_text(path: str) -> str:
    from pathlib import Path

    from lrp_llm.errors import InputError

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"no such file: {p}; pass a UTF-8 text file with --file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{p} is not UTF-8 text; convert it (e.g. iconv -t utf-8) and try again") from None
    if not text.strip():
        raise InputError(f"{p} is empty; pass a file with some text")
    return text.rstrip("\n")


def run(args: argparse.Namespace) -> int:
    from ..render import terminal

    text = _read_text(args.file)
    outputs = OutputFiles.from_args(args)
    err = terminal(stderr=True)
    out = terminal()
    model, tokenizer = load_model_from_args(args, err)

    from lrp_llm.engines.explain import explain

    from ..render import progress_bar

    with progress_bar(err, disabled=args.quiet) as bar:
        task = bar.add_task("explaining", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        attribution = explain(
            model,
            tokenizer,
            text,
            target=args.target,
            generate=None if args.target is not None else (args.generate or 1),
            method=args.method,
            steps=args.steps,
            chat=False,
            model_name=args.model or BUNDLED_MODEL_NAME,
            progress=progress,
        )
    render_longrange(out, attribution, far=args.far, top=args.top, fraction=args.fraction)
    outputs.write(attribution)
    return 0


def render_longrange(console, attribution, *, far: int = 100, top: int = 5, fraction: float = 0.1) -> None:
    """Per answer token: the distance histogram, far shares, farthest relevant token, far tokens."""
    from rich.table import Table
    from rich.text import Text

    from lrp_llm.analyses.longrange import summarize
    from lrp_llm.text import compact, visible

    thresholds = tuple(sorted({100, 1000, far}))
    console.print(
        Text.assemble(
            (visible(attribution.model), "bold"),
            visible(
                f" · {attribution.method} · {attribution.prompt_length} prompt tokens · answer {attribution.answer!r}"
            ),
        )
    )
    for t in attribution.targets:
        s = summarize(
            t.relevance,
            attribution.tokens[: t.position],
            thresholds=thresholds,
            fraction=fraction,
            k=top,
            far_distance=far,
        )
        console.print()
        console.print(
            Text.assemble(
                (compact(t.token), "bold"),
                f" at position {t.position} · logit {t.logit:.3f} · conservation {t.conservation:.3f}",
            )
        )
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        table.add_column("distance", justify="right")
        table.add_column("tokens", justify="right")
        table.add_column("|relevance| share", justify="left")
        table.add_column("", justify="right")
        table.add_column("signed sum", justify="right")
        share = s.bins.share
        top_share = float(share.max()) if len(share) else 0.0
        for i in range(len(share)):
            width = int(round(30 * share[i] / top_share)) if top_share > 0 else 0
            lo, hi = s.bins.edges[i], s.bins.edges[i + 1] - 1
            label = f"{lo}" if lo == hi else f"{lo}-{hi}"
            table.add_row(
                label,
                str(int(s.bins.counts[i])),
                Text("█" * width, style="red"),
                f"{100 * share[i]:.1f}%",
                f"{s.bins.signed[i]:+.3g}",
            )
        console.print(table)
        beyond = " · ".join(f"beyond {d}: {100 * v:.1f}%" for d, v in s.share_beyond.items())
        console.print(f"share of |relevance| {beyond}")
        if s.farthest_index is not None:
            console.print(
                f"farthest token with |relevance| >= {fraction:g} x max: {compact(attribution.tokens[s.farthest_index])} "
                f"at {s.farthest_distance} tokens back (position {s.farthest_index})"
            )
        if s.far_tokens:
            console.print(f"most relevant tokens more than {far} back:")
            for ft in s.far_tokens:
                console.print(f"  {ft.distance:>7} back  {ft.relevance:+.4g}  {compact(ft.text or '')}")
        else:
            console.print(f"no tokens more than {far} back")
