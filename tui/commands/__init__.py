"""Headless subcommands. Each module defines ``add_parser(subparsers)`` and ``run(args) -> int``.

Modules are imported when the parser is built, so they import only argparse-level
things at the top; torch, transformers and the core are imported inside ``run``.
"""

COMMANDS: tuple[str, ...] = (
    "app",
    "open",
    "explain",
    "similarity",
    "patch",
    "longrange",
    "evaluate",
    "components_index",
)
