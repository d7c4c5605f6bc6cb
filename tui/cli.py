"""Entry point of ``xai-tui``: argument parsing and the one place errors are reported.

Every error a user can cause ends as one line on stderr and a non-zero exit, never a
traceback. Heavy imports happen inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .commands import COMMANDS
from .commands.common import OneLineArgumentParser

EXIT_ERROR = 2
EXIT_CANCELLED = 130


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = OneLineArgumentParser(
        prog="xai-tui",
        usage="xai-tui [CHECKPOINT] [options]   (the app; see `xai-tui app -h`)\n       xai-tui COMMAND ...",
        description="Explain what a language model used to produce its answer (AttnLRP, MambaLRP, CP-LRP, baselines).",
    )
    parser.add_argument("--version", action="version", version="xai-tui 0.1.0")
    # prog: without it argparse builds "xai-tui explain" from the two-line usage above
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog="xai-tui")
    modules: dict[str, object] = {}
    for name in COMMANDS:
        module = importlib.import_module(f"tui.commands.{name}")
        module.add_parser(sub)
        modules[getattr(module, "COMMAND", name)] = module  # a module may name its command
    return parser, modules


DEFAULT_COMMAND = "app"
_TOP_LEVEL = {"-h", "--help", "--version"}


def route(argv: list[str], commands) -> list[str]:
    """``xai-tui`` and ``xai-tui CHECKPOINT [options]`` mean ``xai-tui app ...``."""
    if DEFAULT_COMMAND not in commands:
        return argv
    if not argv or (argv[0] not in commands and argv[0] not in _TOP_LEVEL):
        return [DEFAULT_COMMAND, *argv]
    return argv


def main(argv: list[str] | None = None) -> int:
    # Third-party progress bars (tqdm) would garble our own; rich shows progress.
    os.environ.setdefault("TQDM_DISABLE", "1")
    route_warnings()
    parser, modules = build_parser()
    try:
        args = parser.parse_args(route(list(sys.argv[1:] if argv is None else argv), modules))
    except SystemExit as done:  # --help, --version, or a bad option (its one error line is printed)
        return done.code if isinstance(done.code, int) else EXIT_ERROR
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # noqa: BLE001 - the single place user-facing errors are shown
        print(f"error: {describe_error(exc)}", file=sys.stderr)  # controls made visible there
        if os.environ.get("XAI_TUI_DEBUG"):
            raise
        return EXIT_ERROR


def route_warnings() -> None:
    """Python warnings: ours (a checkpoint loaded with missing weights ...) become one ``warning: ...``
    line on stderr; third-party ones (torch, transformers) are hidden, so an error stays one line,
    unless XAI_TUI_DEBUG is set."""
    import warnings

    if os.environ.get("XAI_TUI_DEBUG"):
        return

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if getattr(category, "__module__", "").startswith("lrp_llm"):
            from lrp_llm.text import visible

            # a warning names tensors and paths of the checkpoint: data, shown with controls visible
            print(f"warning: {visible(' '.join(str(message).split()))}", file=sys.stderr)

    warnings.showwarning = show


def describe_error(exc: BaseException) -> str:
    """One line: our own errors carry their message; anything else names its type. Paths, prompts
    and tokens quoted in a message are data: their control characters are made visible."""
    from lrp_llm.errors import XaiError  # light module, no torch
    from lrp_llm.text import visible

    text = visible(" ".join(str(exc).split()))
    if isinstance(exc, XaiError):
        return text
    if isinstance(exc, MemoryError):
        return "out of memory; use a shorter input, fewer --generate tokens or a smaller --dtype"
    if isinstance(exc, OSError):
        return f"{text or type(exc).__name__} (check the path and permissions)"
    return f"{type(exc).__name__}: {text[:300]} (set XAI_TUI_DEBUG=1 for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
