"""Options and helpers shared by the subcommands (argparse-level imports only)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def add_model_args(parser: argparse.ArgumentParser, *, what: str = "the bundled SmolLM2-135M-Instruct") -> None:
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model", metavar="PATH", help=f"HF model folder (config.json + safetensors) or .gguf file; default: {what}"
    )
    g.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where to run (default: cpu)")
    g.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16", "float64"],
        help="weights precision",
    )
    g.add_argument(
        "--device-map", metavar="MAP", help="'auto' to spread a large model over GPUs / offload to CPU (accelerate)"
    )
    g.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow pickled weights (pytorch_model.bin); only for trusted checkpoints",
    )
    g.add_argument(
        "--trust-remote-code", action="store_true", help="run the checkpoint's own Python code (off by default)"
    )


def add_output_args(
    parser: argparse.ArgumentParser, *, html: bool = True, json_help: str = "write the result as JSON"
) -> argparse._ArgumentGroup:
    """The "output" group: --json, --html (unless ``html`` is False) and --quiet; returned so a
    command can add its own output options to it."""
    g = parser.add_argument_group("output")
    g.add_argument("--json", metavar="OUT", help=json_help)
    if html:
        g.add_argument("--html", metavar="OUT", help="write a self-contained HTML report")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    return g


@dataclass(frozen=True)
class OutputFiles:
    """The files a subcommand writes at its end: ``--json`` and ``--html`` (None: not asked for)."""

    json: str | None
    html: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OutputFiles:
        """The output files of ``args``, checked before any heavy work (InputError if one cannot be
        written, is not a regular file, or is the same file as another output or an input)."""
        outputs = cls(json=args.json, html=getattr(args, "html", None))
        check_output_paths(
            {"--json": outputs.json, "--html": outputs.html},
            inputs={f"the input {flag}": getattr(args, dest, None) for dest, flag in INPUT_FILE_OPTIONS.items()},
        )
        return outputs

    def write(
        self, result: Any, report_page: Callable[[Any], str] | None = None, *, json_text: str | None = None
    ) -> None:
        """--json: ``result.save`` (a ``JsonResult``), or ``json_text`` when given; --html: the page
        ``report_page(result)`` (a builder of :mod:`lrp_llm.export.report`)."""
        if self.json:
            if json_text is not None:
                from lrp_llm.results.base import write_atomic

                write_atomic(self.json, json_text)
            else:
                result.save(self.json)
        if self.html and report_page is not None:
            from lrp_llm.export.report import write_report

            write_report(self.html, report_page(result))


# The options of every subcommand that name a file it reads (argparse dest -> option): an output
# must never be one of them (`evaluate --data X --json X` would overwrite the data set).
INPUT_FILE_OPTIONS = {"model": "--model", "data": "--data", "image": "--image", "file": "--file", "b_file": "--b-file"}


def check_output_paths(outputs: dict[str, str | None], inputs: dict[str, str | None] | None = None) -> None:
    """Fail before any heavy work when an output file could not be written or would destroy
    something (:func:`lrp_llm.results.base.check_outputs`); keys name each file ("--json")."""
    from lrp_llm.results.base import check_outputs

    check_outputs(outputs, inputs)


def load_model_from_args(args: argparse.Namespace, console=None):
    """Load (model, tokenizer) with a status line on stderr."""
    from lrp_llm.checkpoints.loading import demo_model_path

    from ..backend import LoadOptions

    name = args.model or str(demo_model_path())
    status = None
    if console is not None and not getattr(args, "quiet", False):
        status = console.status(f"loading {name} ...")
        status.start()
    try:
        return LoadOptions.from_args(args).load_model()
    finally:
        if status is not None:
            status.stop()
