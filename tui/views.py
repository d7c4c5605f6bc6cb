"""The app's views (one Textual mode each) and when each is available.

A view lives in its own screen module under ``tui/screens/``. A view serves the model
kinds in ``kinds`` (``lrp_llm.archs`` kinds: "causal-lm", "seq2seq",
"image-classification"; None: any kind, e.g. similarity with its own encoder); the app
offers the views of its checkpoint's kind, the first of them at start. Views built on a
capability that may not be installed (``requires``: core modules) are offered only when
both their screen module and those modules exist; this check uses ``find_spec`` and
imports nothing, so it costs nothing at start-up.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class View:
    id: str
    title: str
    key: str
    module: str
    screen: str
    requires: tuple[str, ...] = ()
    kinds: tuple[str, ...] | None = ("causal-lm",)

    def available(self) -> bool:
        try:
            return all(importlib.util.find_spec(m) is not None for m in (self.module, *self.requires))
        except ModuleNotFoundError:  # a parent package is missing
            return False

    def serves(self, kind: str | None) -> bool:
        """Whether the view works for a model of ``kind`` (None: no model, a saved causal-LM result)."""
        return self.kinds is None or (kind or "causal-lm") in self.kinds

    def screen_class(self):
        return getattr(importlib.import_module(self.module), self.screen)


VIEWS: tuple[View, ...] = (
    View("ask", "Ask & explain", "f2", "tui.screens.ask", "AskScreen"),
    View("seq2seq", "Source & answer", "f2", "tui.screens.seq2seq", "Seq2SeqScreen", kinds=("seq2seq",)),
    View("longrange", "Long range", "f3", "tui.screens.longrange", "LongRangeScreen"),
    # before similarity (which serves every kind): the first view of an image classifier
    View("image", "Image", "f2", "tui.screens.image", "ImageScreen", kinds=("image-classification",)),
    View(
        "similarity",
        "Similarity",
        "f4",
        "tui.screens.similarity",
        "SimilarityScreen",
        ("lrp_llm.analyses.bilrp",),
        kinds=None,
    ),
    View("patching", "Patching", "f5", "tui.screens.patching", "PatchingScreen", ("patching",)),
    View("compare", "Compare", "f6", "tui.screens.compare", "CompareScreen"),
    View("history", "History", "f7", "tui.screens.history", "HistoryScreen", kinds=("causal-lm", "seq2seq")),
    View("components", "Components", "f8", "tui.screens.components", "ComponentsScreen"),
)


def available_views(kind: str | None = None) -> list[View]:
    """The installed views that serve a model of ``kind`` (None: a causal LM)."""
    return [v for v in VIEWS if v.available() and v.serves(kind)]


def view(view_id: str) -> View:
    for v in VIEWS:
        if v.id == view_id:
            return v
    raise KeyError(view_id)
