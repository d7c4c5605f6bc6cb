"""Options and helpers shared by the subcommands (argparse-level imports only)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from lrp_llm.text import visible


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``error: ...`` line on stderr (exit 2), like every
    other error of the command, instead of the usage block; ``-h`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        # argparse says "argument --steps: must be ..."; the option alone reads better
        text = " ".join(message.split())
        if text.startswith("argument ") and ": " in text:
            option, _, rest = text[len("argument ") :].partition(": ")
            text = f"{option.split('/')[0]} {rest}" if rest.startswith("must ") else f"{option.split('/')[0]}: {rest}"
        # argparse quotes what was typed ("unrecognized arguments: ..."): data, shown with controls visible
        self.exit(2, f"error: {visible(text)}; see `{self.prog} --help`\n")


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer option in [lo, hi]: anything else is one line naming the
    option and the range, before any work starts (so ``--steps 10**9`` never reaches an allocation)."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number from {lo} to {hi}; got '{text}'") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo} (allowed: {lo} to {hi}); got {value}")
        if value > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi} (allowed: {lo} to {hi}); got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


def fraction_range(lo_exclusive: float, hi: float) -> Callable[[str], float]:
    """An argparse ``type=`` for a real number in (lo_exclusive, hi]; NaN and infinities are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (lo_exclusive < value <= hi):  # also False for NaN
            raise argparse.ArgumentTypeError(
                f"must be a number greater than {lo_exclusive:g} and at most {hi:g}; got '{text}'"
            )
        return value

    parse.__name__ = "number"
    return parse


# Ranges of the numeric options, shared by the subcommands that have them. Upper bounds keep a
# mistyped value from starting hours of work or a huge allocation; they are far above any real use.
MAX_STEPS = 4096  # integrated-gradients steps (one chunked pass each)
MAX_NEW_TOKENS = 100_000  # answer tokens; the model's context length is checked once it is loaded
MAX_LISTED = 10_000  # rows a terminal listing (--top, --show) prints
MAX_SEED = 2**32 - 1  # the range every random generator in the stack accepts
MAX_DISTANCE = 10_000_000  # tokens back (--far)
MAX_BATCH = 4096  # inputs per forward pass
MAX_ITEMS = 10_000_000  # items of a data set (--limit)


def add_model_args(parser: argparse.ArgumentParser, *, what: str = "the bundled SmolLM2-135M-Instruct") -> None:
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model",
        metavar="PATH",
        help="HF model folder (config.json + safetensors), .gguf file, or org/name from the local Hugging Face "
        f"cache; default: {what}",
    )
    g.add_argument(
        "--revision", metavar="REV", help="branch, tag or commit of an org/name model in the cache (default: main)"
    )
    g.add_argument(
        "--allow-download",
        action="store_true",
        help="download an org/name model missing from the local cache (off: the cache only, never the network)",
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
    g.add_argument(
        "--allow-missing-weights",
        action="store_true",
        help="load a checkpoint that lacks some tensors (or has others), randomly initialising them; experiments only",
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
        from rich.text import Text

        from lrp_llm.text import visible

        status = console.status(Text(f"loading {visible(name)} ..."))  # a str would be parsed as markup
        status.start()
    try:
        return LoadOptions.from_args(args).load_model()
    finally:
        if status is not None:
            status.stop()
