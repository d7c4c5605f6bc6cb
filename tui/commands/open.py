"""``xai-tui open RESULT.json``: show a saved result in the app, without loading a model."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "open",
        help="show a saved JSON result in the app (no model needed)",
        description="Open a result written by `xai-tui explain --json` or the app's export (Ctrl+S).",
    )
    p.add_argument("result", metavar="RESULT.json", help="the JSON file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lrp_llm.errors import InputError

    path = Path(args.result).expanduser()
    if not path.is_file():
        raise InputError(f"no such file: {path}; pass a result saved with --json or the app's export")
    from ..app import XaiApp, run_app

    return run_app(XaiApp(None, result_path=str(path)))
