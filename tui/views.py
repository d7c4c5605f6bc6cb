"""The app's views (one Textual mode each) and when each is available.

A view lives in its own screen module under ``tui/screens/``. Views built on a
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

    def available(self) -> bool:
        try:
            return all(importlib.util.find_spec(m) is not None for m in (self.module, *self.requires))
        except ModuleNotFoundError:  # a parent package is missing
            return False

    def screen_class(self):
        return getattr(importlib.import_module(self.module), self.screen)


VIEWS: tuple[View, ...] = (
    View("ask", "Ask & explain", "f2", "tui.screens.ask", "AskScreen"),
    View("longrange", "Long range", "f3", "tui.screens.longrange", "LongRangeScreen"),
    View("similarity", "Similarity", "f4", "tui.screens.similarity", "SimilarityScreen", ("lrp_llm.analyses.bilrp",)),
    View("patching", "Patching", "f5", "tui.screens.patching", "PatchingScreen", ("patching",)),
)


def available_views() -> list[View]:
    return [v for v in VIEWS if v.available()]


def view(view_id: str) -> View:
    for v in VIEWS:
        if v.id == view_id:
            return v
    raise KeyError(view_id)
