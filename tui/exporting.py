"""What a view hands to the export dialog: its result as HTML and as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lrp_llm.attribution import Attribution


class Exportable(Protocol):
    """A result that can be written as a self-contained HTML page and as JSON."""

    stem: str  # default file name without extension

    def write_html(self, path: str) -> None: ...

    def write_json(self, path: str) -> None: ...


@dataclass
class AttributionExport:
    """An :class:`Attribution` through ``attribution_html`` and ``Attribution.save``."""

    attribution: Attribution

    @property
    def stem(self) -> str:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return f"xai-{self.attribution.method}-{stamp}"

    def write_html(self, path: str) -> None:
        from lrp_llm.attribution import write_atomic
        from lrp_llm.export.html import attribution_html

        write_atomic(path, attribution_html(self.attribution))

    def write_json(self, path: str) -> None:
        self.attribution.save(path)


FORMATS = {"html": "write_html", "json": "write_json"}


def write(result: Exportable, path: str, fmt: str) -> None:
    """Check that ``path`` can be written, then write ``result`` there as ``fmt``."""
    from .commands.common import check_output_paths

    check_output_paths(path)
    getattr(result, FORMATS[fmt])(path)


@dataclass
class SimilarityExport:
    """A ``SimilarityExplanation`` through ``similarity_report`` and its ``save``."""

    explanation: object

    @property
    def stem(self) -> str:
        return f"xai-similarity-{datetime.now().strftime('%Y%m%d-%H%M%S')}"

    def write_html(self, path: str) -> None:
        from lrp_llm.attribution import write_atomic
        from lrp_llm.export.report import similarity_report

        write_atomic(path, similarity_report([self.explanation]))

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
        from lrp_llm.attribution import write_atomic
        from lrp_llm.export.report import patching_report

        write_atomic(path, patching_report(self.result))

    def write_json(self, path: str) -> None:
        self.result.save(path)  # type: ignore[attr-defined]


def patching_html(result) -> str:
    """Self-contained page: the baselines and every grid as a table of coloured cells."""
    import html
    import math

    esc = html.escape

    def cell(v: float, scale: float) -> str:
        if not math.isfinite(v):
            return "<td></td>"
        a = min(1.0, abs(v) / scale) if scale else 0.0
        rgb = "214,39,40" if v >= 0 else "31,119,220"
        return f"<td style='background:rgba({rgb},{a:.2f})' title='{v:.4g}'>{v:.2f}</td>"

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>patching — {esc(result.model)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;color:#111}table{border-collapse:collapse;margin:1em 0}",
        "td,th{padding:.15em .4em;border:1px solid #eee;font-size:.85em;text-align:right}th{font-weight:normal;color:#555}",
        "</style></head><body>",
        f"<h1>Patching — {esc(result.model)}</h1>",
        f"<p>answer {esc(repr(result.answer))} vs wrong {esc(repr(result.wrong))}; "
        f"logit difference clean {result.baseline['clean']['logit_diff']:+.3f}, "
        f"corrupted {result.baseline['corrupted']['logit_diff']:+.3f}</p>",
    ]
    for c in result.correlations:
        parts.append(
            f"<p>{esc(c['method'])} vs sweep ({esc(c['kind'])}, {esc(c['direction'])}): r = {c['pearson_r']:.3f}</p>"
        )
    for g in result.grids:
        finite = [abs(float(v)) for v in g.values.ravel() if math.isfinite(v)]
        scale = max(finite, default=0.0)
        parts.append(
            f"<h2>{esc(g.method)} · {esc(g.kind)} · {esc(g.direction)} · {esc(g.metric)}</h2><table><tr><th></th>"
        )
        parts += [f"<th>{esc(c)}</th>" for c in g.columns]
        parts.append("</tr>")
        for r, name in enumerate(g.rows):
            parts.append(f"<tr><th>{esc(name)}</th>" + "".join(cell(float(v), scale) for v in g.values[r]) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts)
