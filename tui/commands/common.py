"""Options and helpers shared by the subcommands (argparse-level imports only)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrp_llm.errors import InputError


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
        """The output files of ``args``, checked before any heavy work (InputError if one cannot be written)."""
        outputs = cls(json=args.json, html=getattr(args, "html", None))
        check_output_paths(outputs.json, outputs.html)
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


def check_output_paths(*paths: str | None) -> None:
    """Fail before any heavy work when an output file could not be written."""
    for p in paths:
        if not p:
            continue
        path = Path(p).expanduser()
        parent = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise InputError(f"{path} is a folder; pass a file name for the output")
        if not parent.is_dir():
            raise InputError(f"cannot write {path}: the folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise InputError(f"cannot write {path}: the folder {parent} is not writable")


def load_model_from_args(args: argparse.Namespace, console=None):
    """Load (model, tokenizer) with a status line on stderr."""
    from lrp_llm.checkpoints.loading import demo_model_path

    from ..backend import LoadOptions

    name = args.model or str(demo_model_path())
    status = None
    if console is not None and not getattr(args, "quiet", False):
        from rich.text import Text

        from lrp_llm.text import visible

        status = console.status(Text(f"loading {visible(name)} ..."))  # a str would be parsed as markup
        status.start()
    try:
        return LoadOptions.from_args(args).load_model()
    finally:
        if status is not None:
            status.stop()
