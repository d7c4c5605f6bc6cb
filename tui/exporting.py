"""What a view hands to the export dialog: its result as HTML and as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lrp_llm.results.attribution import Attribution


class Exportable(Protocol):
    """A result that can be written as a self-contained HTML page and as JSON."""

    stem: str  # default file name without extension

    def write_html(self, path: str) -> None: ...

    def write_json(self, path: str) -> None: ...


@dataclass
class AttributionExport:
    """An :class:`Attribution` through ``explanation_report`` and ``Attribution.save``."""

    attribution: Attribution

    @property
    def stem(self) -> str:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return f"xai-{self.attribution.method}-{stamp}"

    def write_html(self, path: str) -> None:
        from lrp_llm.export.report import explanation_report, write_report

        write_report(path, explanation_report(self.attribution))

    def write_json(self, path: str) -> None:
        self.attribution.save(path)


FORMATS = {"html": "write_html", "json": "write_json"}


def write(result: Exportable, path: str, fmt: str, *, inputs: Sequence[str] = ()) -> None:
    """Check that ``path`` can be written and is none of ``inputs`` (the result files opened in
    the app), then write ``result`` there as ``fmt``."""
    from .commands.common import check_output_paths

    check_output_paths({"the export file": path}, inputs={f"the result opened from {p}": p for p in inputs})
    getattr(result, FORMATS[fmt])(path)


@dataclass
class SimilarityExport:
    """A ``SimilarityExplanation`` through ``similarity_report`` and its ``save``."""

    explanation: object

    @property
    def stem(self) -> str:
        return f"xai-similarity-{datetime.now().strftime('%Y%m%d-%H%M%S')}"

    def write_html(self, path: str) -> None:
        from lrp_llm.export.report import similarity_report, write_report

        write_report(path, similarity_report([self.explanation]))

    def write_json(self, path: str) -> None:
        self.explanation.save(path)  # type: ignore[attr-defined]


@dataclass
class PatchingExport:
    """A ``PatchingResult`` as JSON (its ``save``) and as the HTML report of its grids."""

    result: object

    @property
    def stem(self) -> str:
        return f"xai-patching-{datetime.now().strftime('%Y%m%d-%H%M%S')}"

    def write_html(self, path: str) -> None:
        from lrp_llm.export.report import patching_report, write_report

        write_report(path, patching_report(self.result))

    def write_json(self, path: str) -> None:
        self.result.save(path)  # type: ignore[attr-defined]
