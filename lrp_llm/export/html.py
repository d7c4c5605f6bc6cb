"""The HTML report of an :class:`~lrp_llm.results.attribution.Attribution` (the entry point other
code calls; the report itself is built in :mod:`lrp_llm.export.report`)."""

from __future__ import annotations

from typing import Any

from lrp_llm.results.attribution import Attribution


def attribution_html(a: Attribution, title: str | None = None, **options: Any) -> str:
    """One self-contained HTML file: header, token heatmap per answer token (a small
    inline script recolours the prompt; without script every token's heatmap is still
    shown), word view, long-range section for long inputs. ``options`` go to
    :func:`~lrp_llm.export.report.explanation_report`."""
    from lrp_llm.export.report import explanation_report

    return explanation_report(a, title=title, **options)


__all__ = ["attribution_html"]
