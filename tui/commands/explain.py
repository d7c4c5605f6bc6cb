"""``xai-tui explain``: explain a forced target or every token of a greedy answer."""

from __future__ import annotations

import argparse

from lrp_llm.methods import METHODS

from ..backend import BUNDLED_MODEL_NAME
from .common import (
    MAX_LISTED,
    MAX_NEW_TOKENS,
    MAX_SEED,
    MAX_STEPS,
    OutputFiles,
    add_model_args,
    add_output_args,
    int_range,
    load_model_from_args,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="explain an answer token by token",
        description="Generate (or force) an answer and explain each of its tokens over the prompt "
        "(causal LMs, and T5 encoder-decoders over source and decoder tokens); with --image, explain "
        "the class an image classifier (ViT) gives the image, per pixel and per patch.",
    )
    add_model_args(p)
    g = p.add_argument_group("input")
    g.add_argument("--prompt", help="the question or text to continue (required unless --image)")
    g.add_argument("--image", metavar="FILE", help="an image (PNG, JPEG) for an image classifier such as ViT")
    g.add_argument("--context", help="a passage; the prompt becomes a QA chat turn 'CONTEXT\\nPROMPT'")
    g.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wrap the prompt in the model's chat template (default: only with --context)",
    )
    g.add_argument("--system", help="system message for the chat template")
    target = g.add_mutually_exclusive_group()
    target.add_argument(
        "--target", help="explain this forced continuation instead of generating (images: a class name or index)"
    )
    target.add_argument(
        "--generate",
        type=int_range(1, MAX_NEW_TOKENS),
        metavar="N",
        help="greedy answer of up to N tokens (default 20)",
    )
    m = p.add_argument_group("method")
    m.add_argument(
        "--method",
        choices=METHODS,
        help="attribution method (default: the model family's, chosen by measurement (README, Faithfulness): "
        "attnlrp-qk-late for Llama-family decoders, QA evidence top-1 0.95 and ABPC 7.27 on held-out items; "
        "cp-lrp for other decoders; mambalrp for Mamba; image classifiers: theirs)",
    )
    m.add_argument("--steps", type=int_range(1, MAX_STEPS), default=32, help="integrated-gradients steps (default 32)")
    m.add_argument("--seed", type=int_range(0, MAX_SEED), default=0, help="seed of the random baseline")
    m.add_argument(
        "--components",
        action="store_true",
        help="also the relevance of every layer, head and MLP neuron per answer token (printed, and in --json); "
        "gradient x input methods only",
    )
    add_output_args(p)
    v = p.add_argument_group("terminal view")
    v.add_argument(
        "--heatmap",
        default="all",
        metavar="WHICH",
        help="heatmaps to print: all, none, answer-token indices like 0,3 or token texts like France (default: all)",
    )
    v.add_argument(
        "--top", type=int_range(0, MAX_LISTED), default=5, help="most relevant tokens listed per answer token"
    )
    v.add_argument(
        "--scale-all",
        action="store_true",
        help="colour scale over every token (default: special and chat-template tokens left out of it)",
    )


def run(args: argparse.Namespace) -> int:
    from lrp_llm.errors import InputError

    from ..render import terminal

    if args.image is not None:
        from .explain_image import check_image_args

        check_image_args(args)
    elif not args.prompt or not args.prompt.strip():
        raise InputError("the prompt is empty; pass some text with --prompt")
    outputs = OutputFiles.from_args(args)
    err = terminal(stderr=True)
    out = terminal()
    model, tokenizer = load_model_from_args(args, err)
    from .explain_image import is_image_classifier, run_image

    if args.image is not None or is_image_classifier(model):
        if args.components:
            raise InputError("--components applies to language models; leave it out for image classifiers")
        return run_image(args, model, tokenizer, out, outputs)

    from lrp_llm.engines.explain import explain
    from lrp_llm.export.report import explanation_report

    from ..render import progress_bar, render_attribution

    with progress_bar(err, disabled=args.quiet) as bar:
        gen_task = bar.add_task("generating", total=args.generate or 20) if args.target is None else None
        exp_task = bar.add_task("explaining", total=None, visible=False)

        def on_token(_tok: int) -> None:
            if gen_task is not None:
                bar.advance(gen_task)

        def progress(done: int, total: int) -> None:
            if gen_task is not None:
                bar.update(gen_task, visible=False)
            bar.update(exp_task, completed=done, total=total, visible=True)

        attribution = explain(
            model,
            tokenizer,
            args.prompt,
            context=args.context,
            target=args.target,
            generate=args.generate,
            method=args.method,
            steps=args.steps,
            chat=args.chat,
            system=args.system,
            seed=args.seed,
            model_name=args.model or BUNDLED_MODEL_NAME,
            progress=progress,
            on_token=on_token,
            components=args.components,
        )
    if attribution.source_tokens is not None:
        from ..render_seq2seq import render_seq2seq

        render_seq2seq(out, attribution, heatmaps=args.heatmap, top=args.top)
    else:
        render_attribution(out, attribution, heatmaps=args.heatmap, top=args.top, scale_all=args.scale_all)
    if args.components:
        from ..render_components import render_components

        render_components(out, attribution, top=max(1, min(args.top, 5)))
    outputs.write(attribution, explanation_report)
    return 0
