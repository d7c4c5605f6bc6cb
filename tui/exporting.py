"""What a view hands to the export dialog: its result as HTML (the result's report) and as JSON."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

FORMATS = ("html", "json")


@dataclass
class Export:
    """A result (any type on the JSON result base) and the report builder of its kind.

    ``report``: the name of its page builder in :mod:`lrp_llm.export.report`, called with
    ``report_argument(result)`` (imported when the page is written, so the app starts without
    the exporters); ``label``: the middle of the default file name.
    """

    result: Any
    report: str
    label: str
    report_argument: Callable[[Any], Any] = lambda result: result

    @property
    def stem(self) -> str:
        """Default file name without extension, e.g. ``xai-attnlrp-20261129-201530``."""
        return f"xai-{self.label}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"

    def write_html(self, path: str) -> None:
        from lrp_llm.export import report

        report.write_report(path, getattr(report, self.report)(self.report_argument(self.result)))

    def write_json(self, path: str) -> None:
        self.result.save(path)


def attribution_export(a) -> Export:
    """An :class:`~lrp_llm.results.attribution.Attribution` (the ask and long-range views)."""
    return Export(a, "explanation_report", a.method)


def similarity_export(e) -> Export:
    """A :class:`~lrp_llm.results.similarity.SimilarityExplanation` (a page of one pair)."""
    return Export(e, "similarity_report", "similarity", lambda result: [result])


def patching_export(r) -> Export:
    """A :class:`~patching.result.PatchingResult` (the HTML report of its grids)."""
    return Export(r, "patching_report", "patching")


def image_export(a) -> Export:
    """An :class:`~lrp_llm.results.image.ImageAttribution` (the image view; the image report)."""
    return Export(a, "image_report", "image")


def write(result: Export, path: str, fmt: str, *, inputs: Sequence[str] = ()) -> None:
    """Check that ``path`` can be written and is none of ``inputs`` (the result files opened in
    the app), then write ``result`` there as ``fmt`` ("html" or "json")."""
    from .commands.common import check_output_paths

    check_output_paths({"the export file": path}, inputs={f"the result opened from {p}": p for p in inputs})
    (result.write_html if fmt == "html" else result.write_json)(path)
