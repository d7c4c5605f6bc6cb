"""``xai-tui open RESULT.json``: show a saved result in the app, without loading a model.

The file is read and checked completely (:func:`load_result`) before the app starts, so a
file the app could not show is one ``error:`` line naming what is wrong; the app's own
Ctrl+O reads files through the same function.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

# The kinds of result the app shows: schema kind -> (view, module, class).
VIEWABLE = {
    "attribution": ("ask", "lrp_llm.results.attribution", "Attribution"),
    "similarity": ("similarity", "lrp_llm.results.similarity", "SimilarityExplanation"),
    "patching": ("patching", "patching.result", "PatchingResult"),
    "session": ("history", "lrp_llm.results.session", "Session"),
    "image-attribution": ("image", "lrp_llm.results.image", "ImageAttribution"),
}
# Results xai-tui writes that the app has no view for, and where they are shown instead.
SHOWN_ELSEWHERE = {
    "evaluation": "an evaluation; the app has no evaluation view, see its --html report",
    "comparison": "a method comparison; its HTML export shows it, or ask again and press F6 (Compare)",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "open",
        help="show a saved JSON result in the app (no model needed)",
        description="Open a result written by `xai-tui explain --json` or the app's export (Ctrl+S), "
        "or a session saved by the app (Ctrl+Shift+S): its History is filled and its last entry shown.",
    )
    p.add_argument("result", metavar="RESULT.json", help="the JSON file")


def load_result(path: str) -> tuple[str, Any]:
    """``(view id, result)`` of the result file at ``path``, checked completely; a file the app
    cannot show is a one-line InputError (``PATH: what is wrong``)."""
    from pathlib import Path

    from lrp_llm.errors import InputError
    from lrp_llm.results.base import read_json_file, schema_kind

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"no such file: {p}; pass a result saved with --json or the app's export")
    data = read_json_file(p)
    try:
        if not isinstance(data, dict) or "schema" not in data:
            raise InputError('not an xai-tui result: it has no "schema" (files written by --json or Ctrl+S do)')
        kind, _ = schema_kind(data["schema"])
        if kind in SHOWN_ELSEWHERE:
            raise InputError(f"this is {SHOWN_ELSEWHERE[kind]}")
        if kind not in VIEWABLE:
            raise InputError(f"not a result the app can show (schema {data['schema']!r})")
        view, module, name = VIEWABLE[kind]
        return view, getattr(importlib.import_module(module), name).from_dict(data)
    except InputError as exc:
        raise InputError(f"{p}: {exc}") from None


def result_kind(view: str, result: Any) -> str:
    """The model kind whose views show ``result``: an explanation with source tokens is an
    encoder-decoder's ("seq2seq", the Source & answer view), an image explanation an image
    classifier's; every other result "causal-lm"."""
    if view == "ask" and getattr(result, "source_tokens", None) is not None:
        return "seq2seq"
    if view == "image":
        return "image-classification"
    return "causal-lm"


def run(args: argparse.Namespace) -> int:
    view, result = load_result(args.result)  # a file the app could not show fails here, in one line
    from pathlib import Path

    from ..app import XaiApp, run_app

    kind = result_kind(view, result)
    return run_app(XaiApp(None, result_path=str(Path(args.result).expanduser()), kind=kind))
