"""Self-contained HTML reports: one file per result, readable offline in any browser.

Entry points (each returns the whole document as a string; :func:`write_report` writes it
atomically):

- :func:`explanation_report` (an :class:`~lrp_llm.results.attribution.Attribution`): header,
  token heatmap per answer token (script-free fallback included), long-range section
  when the input is long enough, a table of every answer token;
- :func:`similarity_report` (one or a ranked list of BiLRP ``SimilarityExplanation``);
- :func:`patching_report` (a ``PatchingResult``);
- :func:`image_report` (an ``ImageAttribution``, ViT);
- :func:`evaluation_report` (an ``Evaluation``: faithfulness of several methods);
- :func:`components_report` (a ``ComponentsView``: one answer token's layers, heads and neurons).

Sections live in their own modules (``token_section``, ``longrange_section``,
``similarity_section``, ``patching_section``, ``image_section``, ``evaluation_section``)
and share ``common`` (escaping, colour classes, the one page builder :func:`~.common.page`),
``levels`` (the colour level of a value) and ``grid_svg``. Every header shows the run's
date (``meta["date"]``, :func:`lrp_llm.results.base.run_meta`). No report makes a
network request: no external font, script, style or image, and a Content-Security-Policy
that forbids them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from lrp_llm.export import (
    evaluation_section,
    image_section,
    longrange_section,
    patching_section,
    similarity_section,
    token_section,
)
from lrp_llm.export.common import as_dict, esc, fmt, info_table, page, timings_text
from lrp_llm.results.attribution import Attribution
from lrp_llm.results.base import write_atomic

SECTION_CSS = (
    token_section.CSS + longrange_section.CSS + similarity_section.CSS + image_section.CSS + evaluation_section.CSS
)


def _conservation_text(a: Attribution) -> str:
    ratios = [t.conservation for t in a.targets if math.isfinite(t.conservation)]
    if not ratios:
        return "—"
    if len(ratios) == 1:
        return fmt(ratios[0], 3)
    mean = sum(ratios) / len(ratios)
    return f"mean {fmt(mean, 3)} (min {fmt(min(ratios), 3)}, max {fmt(max(ratios), 3)}) over {len(ratios)} tokens"


def _meta_text(meta: dict[str, Any], skip: Sequence[str]) -> str | None:
    items = [f"{k} {v}" for k, v in meta.items() if k not in skip and v is not None and not isinstance(v, (dict, list))]
    return ", ".join(items) or None


def explanation_report(
    a: Attribution,
    *,
    title: str | None = None,
    longrange: Any = "auto",
    far: int = longrange_section.DEFAULT_FAR,
    noscript_budget: int = token_section.NOSCRIPT_BUDGET,
) -> str:
    """The report of an explanation.

    ``longrange``: ``"auto"`` adds the long-range section (pooled over every answer
    token, and per answer token following the selection) when some input token lies more
    than ``far`` tokens before its target; ``None`` leaves it out; a dict or a
    :class:`~lrp_llm.analyses.longrange.LongRange` (see ``longrange_section``) is shown as given.
    """
    title = title or f"{a.method} explanation \u2014 {a.model}"
    rules = a.meta.get("rules")
    method = f"{a.method} ({rules})" if rules and rules != a.method else a.method
    header = info_table(
        [
            ("model", a.model),
            ("method", method),
            ("date", a.meta.get("date") or "—"),
            (
                "prompt",
                f"{a.prompt_length} tokens" + (f" + {len(a.source_tokens)} source tokens" if a.source_tokens else ""),
            ),
            ("answer", a.answer if a.answer else None),
            ("explained", f"{len(a.targets)} answer tokens"),
            ("source / decoder share", _shares_text(a)),
            ("\u03a3 relevance / logit", _conservation_text(a)),
            ("timings", timings_text(a.seconds, a.timings)),
            ("run", _meta_text(a.meta, ("method", "rules", "date"))),
        ]
    )
    tokens_html, script = token_section.render(a, noscript_budget=noscript_budget)
    body = [f"<h1>{esc(title)}</h1>", header, tokens_html]
    if longrange == "auto":
        reach = max((t.position for t in a.targets if len(t.relevance)), default=0)
        if a.source_tokens is None and reach > far:
            body.append(longrange_section.attribution_section(a, far=far))
    elif longrange is not None:
        body.append(longrange_section.render(longrange))
    if a.targets:
        body.append(f"<section id='targets'>{token_section.targets_table(a)}</section>")
    return page(title, body, css=SECTION_CSS, script=script or None)


def _shares_text(a: Attribution) -> str | None:
    """Encoder-decoders: the mean over the answer tokens of each side's share of |relevance|."""
    if a.source_tokens is None or not a.targets:
        return None
    shares = [t.side_shares() for t in a.targets]
    shares = [s for s in shares if math.isfinite(s[0])] or [(float("nan"), float("nan"))]
    source, decoder = (sum(s[k] for s in shares) / len(shares) for k in (0, 1))
    return f"{source:.0%} / {decoder:.0%} of \u03a3|relevance| (mean over the answer tokens; per token below)"


def similarity_report(explanations: Any, *, title: str | None = None) -> str:
    """One BiLRP explanation, or a ranked list of them (one section each)."""
    items = list(explanations) if isinstance(explanations, (list, tuple)) else [explanations]
    if not items:
        raise ValueError("similarity_report needs at least one explanation")
    first = as_dict(items[0])
    rules = f" ({first.get('rules')})" if first.get("rules") else ""
    title = title or f"{first.get('method', 'bilrp')}{rules} similarity explanation \u2014 {first.get('model', '')}"
    seconds = sum(float(as_dict(e).get("seconds", 0.0)) for e in items)
    header = info_table(
        [
            ("model", first.get("model", "")),
            ("method", f"{first.get('method', '')}{rules}"),
            ("pooling / score", f"{first.get('pooling', '')} / {first.get('mode', '')}"),
            ("date", (first.get("meta") or {}).get("date") or "—"),
            ("explanations", len(items)),
            ("timings", timings_text(seconds, first.get("timings") or {})),
        ]
    )
    sections = [similarity_section.render(e) for e in items]
    return page(title, [f"<h1>{esc(title)}</h1>", header, *sections], css=SECTION_CSS)


def patching_report(result: Any, *, title: str | None = None) -> str:
    d = as_dict(result)
    title = title or f"Patching \u2014 {d.get('model', '')}"
    header = info_table(
        [
            ("model", d.get("model", "")),
            ("answer / wrong", f"{d.get('answer', '')!r} / {d.get('wrong', '')!r}"),
            ("date", (d.get("meta") or {}).get("date") or "—"),
            ("timings", timings_text(float(d.get("seconds", 0.0)), d.get("timings") or {})),
        ]
    )
    return page(title, [f"<h1>{esc(title)}</h1>", header, patching_section.render(d)], css=SECTION_CSS)


def image_report(a: Any, *, title: str | None = None) -> str:
    title = title or f"{a.method} explanation of '{a.label}' \u2014 {a.model}"
    header = info_table(
        [
            ("model", a.model),
            ("image", a.source or "(in memory)"),
            ("method", a.method),
            ("explained class", f"{a.label} (index {a.label_id}), logit {fmt(a.logit)}, p {fmt(a.probability, 3)}"),
            ("\u03a3 pixel relevance / logit", fmt(a.conservation, 3)),
            ("date", a.meta.get("date") or "—"),
            ("timings", timings_text(a.seconds, a.timings)),
        ]
    )
    return page(title, [f"<h1>{esc(title)}</h1>", header, image_section.render(a)], css=SECTION_CSS)


def evaluation_report(ev: Any, *, title: str | None = None) -> str:
    """The faithfulness report of an :class:`~lrp_llm.analyses.evaluate.Evaluation`."""
    title = title or f"Faithfulness of explanations: {ev.model}"
    header = info_table(
        [
            ("model", ev.model),
            ("items", f"{ev.n_items} items, {ev.n_answered} answered by the model"),
            ("removal", f"{ev.strategy}, {ev.steps} steps"),
            ("date", ev.meta.get("date") or "—"),
        ]
    )
    return page(title, [f"<h1>{esc(title)}</h1>", header, evaluation_section.render(ev)], css=SECTION_CSS)


def comparison_report(c: Any, *, title: str | None = None) -> str:
    """Several methods on one answer token: a :class:`~lrp_llm.results.comparison.MethodComparison`."""
    from lrp_llm.export import comparison_section

    title = title or f"Methods compared on {c.token!r} \u2014 {c.model}"
    header = info_table(
        [
            ("model", c.model),
            ("explained token", f"{c.token!r}: answer token {c.target}, position {c.position}"),
            ("answer", "".join(c.tokens[c.prompt_length :])),
            ("date", c.meta.get("date") or "\u2014"),
        ]
    )
    body = [f"<h1>{esc(title)}</h1>", header, comparison_section.render(c)]
    return page(title, body, css=SECTION_CSS + comparison_section.CSS)


def components_report(view: Any, *, title: str | None = None) -> str:
    """One answer token's components: a :class:`~lrp_llm.export.components_section.ComponentsView`."""
    from lrp_llm.export import components_section

    a, t = view.attribution, view.explained
    title = title or f"Components of {t.token!r} \u2014 {a.model}"
    header = info_table(
        [
            ("model", a.model),
            ("method", a.method),
            ("explained token", f"{t.token!r}: answer token {view.target}, position {t.position}"),
            ("answer", a.answer if a.answer else None),
            ("date", a.meta.get("date") or "\u2014"),
        ]
    )
    body = [f"<h1>{esc(title)}</h1>", header, components_section.render(view)]
    return page(title, body, css=SECTION_CSS + components_section.CSS)


def write_report(path: str | os.PathLike[str], text: str) -> None:
    """Write a report atomically (temporary file, then rename: never half a file)."""
    write_atomic(path, text)


__all__ = [
    "comparison_report",
    "components_report",
    "evaluation_report",
    "explanation_report",
    "image_report",
    "patching_report",
    "similarity_report",
    "write_report",
]
