"""``xai-tui explain --image``: the image-classifier (ViT) branch of the explain command.

Not a subcommand of its own (it is not listed in ``COMMANDS``); ``explain`` calls it when
``--image`` is given or the model is an image classifier.
"""

from __future__ import annotations

import argparse

from .common import OutputFiles


def check_image_args(args: argparse.Namespace) -> None:
    """Fail before the model is loaded: options that make no sense for images, unreadable images."""
    from lrp_llm.engines.vision import load_image
    from lrp_llm.errors import InputError

    for flag, value in (("--context", args.context), ("--generate", args.generate), ("--system", args.system)):
        if value is not None:
            raise InputError(f"{flag} is for text models; with --image pass at most --target CLASS")
    load_image(args.image)  # a one-line error for a missing, unreadable or corrupt file


def is_image_classifier(model) -> bool:
    from lrp_llm.archs import get_arch
    from lrp_llm.errors import UnsupportedModelError

    try:
        return get_arch(model).kind == "image-classification"
    except UnsupportedModelError:
        return False


def run_image(args: argparse.Namespace, model, processor, out, outputs: OutputFiles) -> int:
    from lrp_llm.archs import get_arch
    from lrp_llm.engines.vision import explain_image
    from lrp_llm.errors import InputError
    from lrp_llm.export.report import image_report

    if not is_image_classifier(model):
        raise InputError(f"--image needs an image classifier such as ViT; this is a {get_arch(model).kind} model")
    if args.image is None:
        raise InputError("this model classifies images; pass one with --image FILE.png")
    attribution = explain_image(
        model,
        processor,
        args.image,
        target=args.target,
        method=args.method,
        steps=args.steps,
        seed=args.seed,
        model_name=args.model,
    )
    render_image_attribution(out, attribution, top=args.top)
    outputs.write(attribution, image_report)
    return 0


def render_image_attribution(console, a, *, top: int = 5) -> None:
    """Header, top classes, and the per-patch relevance as a coloured grid."""
    from rich.table import Table
    from rich.text import Text

    from lrp_llm.text import visible

    from ..render import legend, relevance_rgb, run_header

    console.print(run_header(a))
    console.print(
        Text.assemble(
            ("class: ", "bold"),
            (visible(a.label), "bold green"),
            (f"  p {a.probability:.3f}  logit {a.logit:.3f}  Σ pixel relevance / logit {a.conservation:.3f}", "dim"),
        )
    )
    classes = Table(show_edge=False, header_style="bold")
    classes.add_column("class")
    classes.add_column("p", justify="right")
    for name, p in a.top_labels[:top]:
        classes.add_row(visible(name), f"{p:.3f}")
    console.print(classes)
    console.print(legend())
    grid = a.patch_relevance
    scale = float(abs(grid).max()) if grid.size else 0.0
    ph, pw = a.patch_size
    console.print(Text(f"relevance per patch ({ph}×{pw} pixels), rows top to bottom:", style="bold"))
    for row in grid:
        line = Text()
        for v in row:
            r, g, b = relevance_rgb(float(v), scale)
            line.append(f"{float(v):>8.3g} ", style=f"black on rgb({r},{g},{b})")
        console.print(line)
    cols = grid.shape[1] if grid.ndim == 2 else 1
    best = ", ".join(f"(row {i // cols}, col {i % cols})" for i in a.top_patches(min(top, grid.size)))
    console.print(Text.assemble(("most relevant patches: ", "dim"), best))
