"""``result_html``: the HTML report of a :class:`PatchingResult` (kept as the patching package's name for it).

The page itself is :func:`lrp_llm.export.report.patching_report`, the report the CLI
(``xai-tui patch --html``) and the app's export write: self-contained, every string from
the model or the user escaped.
"""

from __future__ import annotations

from .result import PatchingResult


def result_html(result: PatchingResult, *, title: str | None = None) -> str:
    from lrp_llm.export.report import patching_report

    return patching_report(result, title=title)
