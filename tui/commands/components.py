"""``xai-tui components``: which layers, heads and neurons carried one answer token (headless).

The same numbers as the app's Components view (F8): the relevance trace summed per layer, the top
heads / neurons / Mamba channels / SSM heads / experts and, with ``--select SITE``, that component's conditional heatmap
(:func:`lrp_llm.analyses.components.conditional_relevance`); ``--json`` / ``--html`` as the view's export.
"""

from __future__ import annotations

import argparse

from ..backend import BUNDLED_MODEL_NAME
from .common import MAX_LISTED, MAX_NEW_TOKENS, OutputFiles, add_model_args, add_output_args, int_range


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "components",
        help="which layers, heads and neurons carried an answer token",
        description="Explain an answer with component relevance and show, for one answer token, the relevance "
        "trace per layer, the top attention heads, MLP neurons (and Mamba channels), and optionally the "
        "conditional heatmap of one component (--select). Gradient x input methods (the LRP rule sets) only. "
        "The actions 'index' and 'top' build and read the corpus index: what a head, neuron or Mamba channel "
        "responds to over a text corpus (xai-tui components index --help).",
    )
    from .components_index import add_actions

    add_actions(p.add_subparsers(dest="action", metavar="ACTION", required=False))
    add_model_args(p)
    g = p.add_argument_group("input")
    g.add_argument("--prompt", help="the question or text to continue (required without an ACTION)")
    g.add_argument("--context", help="a passage; the prompt becomes a QA chat turn 'CONTEXT\\nPROMPT'")
    g.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wrap the prompt in the model's chat template (default: only with --context)",
    )
    target = g.add_mutually_exclusive_group()
    target.add_argument("--target", help="explain this forced continuation instead of generating")
    target.add_argument(
        "--generate",
        type=int_range(1, MAX_NEW_TOKENS),
        metavar="N",
        help="greedy answer of up to N tokens (default 20)",
    )
    g.add_argument(
        "--token", type=int_range(0, MAX_NEW_TOKENS), default=0, metavar="N", help="answer token to show (default 0)"
    )
    m = p.add_argument_group("method")
    m.add_argument("--method", help="a gradient x input method (default: the model family's: attnlrp; mambalrp)")
    m.add_argument(
        "--select",
        metavar="SITE",
        help="conditional heatmap of this component, e.g. layer.1.attn.head.2, layer.0.mlp.expert.3, "
        "layer.0.mixer.ssm_head.1",
    )
    m.add_argument("--top", type=int_range(1, MAX_LISTED), default=5, help="components listed per kind (default 5)")
    add_output_args(p, json_help="write the explanation with its components (and the selection) as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from lrp_llm.engines.explain import explain
    from lrp_llm.errors import InputError
    from lrp_llm.export.components_section import ComponentsView
    from lrp_llm.export.report import components_report

    from ..render import progress_bar, terminal
    from ..render_components import render_component_view
    from .common import load_model_from_args

    if getattr(args, "action", None):
        from .components_index import run as run_action

        return run_action(args)
    if args.prompt is None:
        raise InputError("components needs --prompt (or an action: index, top; see xai-tui components --help)")
    if not args.prompt.strip():
        raise InputError("the prompt is empty; pass some text with --prompt")
    outputs = OutputFiles.from_args(args)
    err, out = terminal(stderr=True), terminal()
    model, tokenizer = load_model_from_args(args, err)
    with progress_bar(err, disabled=args.quiet) as bar:
        task = bar.add_task("explaining with components", total=None)
        attribution = explain(
            model,
            tokenizer,
            args.prompt,
            context=args.context,
            target=args.target,
            generate=args.generate,
            method=args.method,
            chat=args.chat,
            model_name=args.model or BUNDLED_MODEL_NAME,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            components=True,
        )
    n = len(attribution.targets)
    if args.token >= n:
        raise InputError(f"--token {args.token} is past the answer ({n} tokens: 0 to {n - 1})")
    conditional = None
    if args.select is not None:
        from lrp_llm.analyses.components import component_sites, conditional_relevance

        t = attribution.targets[args.token]
        ids = attribution.input_ids[: t.position + 1]
        selection = component_sites(model, t.components, args.select)  # a Mamba-2 SSM head: its channels
        result = conditional_relevance(model, ids, t.position, [selection], method=attribution.method)
        conditional = result.heatmaps[0].relevance
    view = ComponentsView(attribution, args.token, args.select, conditional)
    render_component_view(out, view, top=args.top)
    outputs.write(view, components_report, json_text=json.dumps(view.to_dict(), indent=1, allow_nan=False))
    return 0
