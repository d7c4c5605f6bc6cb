"""``xai-tui components index`` / ``xai-tui components top``: what a head, neuron or channel responds to over a corpus.

``index`` builds (or resumes) the on-disk index of :mod:`lrp_llm.analyses.corpus_index` for one site kind x
layer; ``top`` prints a unit's top contexts from the database alone (no model is loaded).
"""

from __future__ import annotations

import argparse

from .common import add_model_args, int_range

KINDS = ("neuron", "head", "channel")


def add_actions(actions: argparse._SubParsersAction) -> None:
    """The ``index`` and ``top`` actions of ``xai-tui components`` (:mod:`tui.commands.components`)."""
    ix = actions.add_parser(
        "index",
        help="build or resume the index of one layer",
        description="Build the index of one layer's heads, neurons or channels over text files (one passage per "
        "line, or paragraphs separated by blank lines; default: the corpus shipped with xai-tui). Ctrl-C stops "
        "cleanly; running the same command again resumes where it stopped.",
    )
    add_model_args(ix)
    g = ix.add_argument_group("index")
    g.add_argument("--corpus", nargs="+", metavar="FILE", help="UTF-8 text files (default: the shipped corpus)")
    g.add_argument("--layer", type=int_range(0, 10_000), required=True, metavar="N", help="the layer to index")
    g.add_argument("--kind", choices=KINDS, required=True, help="which units of the layer")
    g.add_argument("--db", metavar="FILE", help="the SQLite database (default: under ~/.cache/xai-tui/index)")
    g.add_argument("--method", help="a gradient x input method (default: the model's LRP method)")
    g.add_argument("--top-n", type=int_range(1, 1000), default=20, help="contexts kept per unit (default 20)")
    g.add_argument("--window", type=int_range(2, 4096), default=64, help="tokens per window (default 64)")
    g.add_argument("--limit", type=int_range(1, 10_000_000), metavar="N", help="only the first N windows")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    top = actions.add_parser(
        "top",
        help="print a unit's top contexts from an index",
        description="Print the top contexts of one head, neuron or channel (e.g. layer.3.mlp.neuron.17, "
        "layer.2.attn.head.1) from an index database; the firing token is marked.",
    )
    top.add_argument(
        "site", metavar="SITE", help="layer.N.mlp.neuron.I, layer.N.attn.head.H or layer.N.mixer.channel.C"
    )
    top.add_argument("--db", metavar="FILE", help="the database (default: the most recently built one)")
    top.add_argument("--by", choices=("relevance", "activation"), default="relevance", help="which ranking")
    top.add_argument("-k", type=int_range(1, 1000), default=10, help="how many contexts (default 10)")
    top.add_argument("--context", type=int_range(0, 200), default=8, help="tokens shown either side (default 8)")


def run(args: argparse.Namespace) -> int:
    return _index(args) if args.action == "index" else _top(args)


def _index(args: argparse.Namespace) -> int:
    from rich.text import Text

    from lrp_llm.analyses import corpus_index as ci
    from lrp_llm.text import visible

    from ..render import progress_bar, terminal

    if args.corpus:
        ci.read_passages(args.corpus)  # a missing or binary file fails before the model loads
    err = terminal(stderr=True)
    from .common import load_model_from_args

    model, tokenizer = load_model_from_args(args, err)
    with progress_bar(err, disabled=args.quiet) as bar:
        task = bar.add_task(f"indexing layer {args.layer} {args.kind}s", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = ci.build(
            model,
            tokenizer,
            args.corpus,
            args.layer,
            args.kind,
            db=args.db,
            method=args.method,
            top_n=args.top_n,
            window=args.window,
            limit=args.limit,
            progress=progress,
        )
    note = f" ({result.skipped} already done)" if result.skipped else ""
    line = f"indexed {result.done} of {result.windows} windows{note} into {visible(str(result.db))}"
    terminal().print(Text(line))
    return 0


def _latest_db():
    from lrp_llm.analyses.corpus_index import default_db_path
    from lrp_llm.errors import InputError

    folder = default_db_path("0" * 16, "0" * 12).parent
    found = sorted(folder.glob("*.sqlite"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not found:
        raise InputError("no index found; build one with `xai-tui components index --layer N --kind neuron`")
    return found[-1]


def _top(args: argparse.Namespace) -> int:
    from rich.table import Table
    from rich.text import Text

    from lrp_llm.analyses.corpus_index import top_contexts
    from lrp_llm.text import visible

    from ..render import terminal

    db = args.db or _latest_db()
    snippets = top_contexts(db, args.site, by=args.by, k=args.k, context=args.context)
    out = terminal()
    table = Table(title=Text(f"{args.site} by {args.by} ({visible(str(db))})"), show_lines=False)
    for name, justify in (("#", "right"), ("value", "right"), ("source", "left"), ("context", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in snippets:
        text = Text(visible("".join(s.before).replace("\n", "↵")))
        # the firing token between marks (also readable without colour); data as Text, never markup
        text.append(Text(f"⟦{visible(s.token.replace(chr(10), '↵'))}⟧", style="bold reverse"))
        text.append(Text(visible("".join(s.after).replace("\n", "↵"))))
        table.add_row(str(s.rank + 1), f"{s.value:.4g}", Text(visible(s.source)), text)
    if not snippets:
        out.print(Text(f"no contexts for {args.site} yet: the index is empty"))
        return 0
    out.print(table)
    return 0
