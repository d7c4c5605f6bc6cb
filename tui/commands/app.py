"""``xai-tui [CHECKPOINT]`` / ``xai-tui app [CHECKPOINT]``: the interactive app.

``xai-tui`` with no command, or with a first argument that is not a command, runs this
one, so ``xai-tui`` alone opens the app on the bundled demo model.
"""

from __future__ import annotations

import argparse

from lrp_llm.methods import METHODS

from .common import MAX_NEW_TOKENS, add_model_args, int_range


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "app",
        help="the interactive app (default: `xai-tui [CHECKPOINT]` runs it)",
        description="Ask a question, watch the answer stream in, and move over its tokens to see what each one used.",
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        metavar="CHECKPOINT",
        help="HF model folder, .gguf file, or org/name from the local Hugging Face cache (default: the bundled SmolLM2)",
    )
    add_model_args(p)
    g = p.add_argument_group("start with")
    g.add_argument("--prompt", help="a question to ask as soon as the model has loaded")
    g.add_argument("--context", help="a passage the question is about")
    g.add_argument("--plain", action="store_true", help="plain prompt mode (no chat template)")
    g.add_argument("--image", metavar="FILE", help="an image file to explain (image classifiers: the image view)")
    g.add_argument(
        "--method", choices=METHODS, help="attribution method (default: the model family's, as xai-tui explain)"
    )
    g.add_argument(
        "--generate",
        type=int_range(1, MAX_NEW_TOKENS),
        default=20,
        metavar="N",
        help="answer length in tokens (default 20)",
    )


def run(args: argparse.Namespace) -> int:
    from lrp_llm.errors import InputError

    if args.checkpoint and args.model and args.checkpoint != args.model:
        raise InputError("pass the checkpoint once: either as CHECKPOINT or with --model")
    from ..app import XaiApp, run_app
    from ..backend import ImageBackend, LoadOptions, ModelBackend

    options = LoadOptions.from_args(args, path=args.checkpoint)
    name = None
    kind = "causal-lm"
    if options.path is not None:
        # a typo, or a name missing from the Hugging Face cache, fails here, before the screen opens;
        # an org/name is resolved (and downloaded, when allowed) once, then loaded from its folder
        from dataclasses import replace
        from pathlib import Path

        from lrp_llm.checkpoints.hub import resolve_checkpoint

        from ..backend import display_name

        folder = resolve_checkpoint(
            options.path,
            revision=options.revision,
            allow_download=options.allow_download,
            allow_pickle=options.allow_pickle,
        )
        if not Path(folder).exists():
            raise InputError(
                f"no such file or folder: {options.path}; pass a Hugging Face model folder, a .gguf file "
                "or an org/name from the local Hugging Face cache"
            )
        name = display_name(options.path)
        options = replace(options, path=str(folder), revision=None, allow_download=False)
        from lrp_llm.checkpoints.loading import checkpoint_kind
        from lrp_llm.errors import XaiError

        try:
            kind = checkpoint_kind(folder, allow_pickle=options.allow_pickle)
        except XaiError:
            pass  # the app opens and shows why the checkpoint does not load, with Ctrl+O to pick another
    if args.image is not None:
        if kind != "image-classification":
            raise InputError(
                f"--image is for image classifiers; {args.checkpoint or 'the bundled model'} is a {kind} model"
            )
        from lrp_llm.engines.vision import load_image

        load_image(args.image)  # a missing or unreadable file is one line, before the screen opens
    backend = ImageBackend if kind == "image-classification" else ModelBackend
    app = XaiApp(
        backend(options, name=name),
        method=args.method,
        question=args.prompt,
        context=args.context,
        chat=not args.plain,
        max_new_tokens=args.generate,
        kind=kind,
        image=args.image,
    )
    return run_app(app)
