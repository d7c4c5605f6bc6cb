"""Patching section: the baselines, the correlations of estimates with the real sweep, and
every layer x position (or layer x head) grid as an SVG heatmap with values on hover.

Colours show each cell's change from the unpatched run of its direction (what "no
effect" reads, :meth:`patching.result.PatchingResult.unpatched`): red moves the metric
toward the clean run, blue away from it (KL is a distance from the clean run, so a
drop is red); each grid has its own symmetric scale.

Input: a :class:`patching.result.PatchingResult` or its ``to_dict()``: ``clean_tokens``,
``corrupted_tokens``, ``answer``, ``wrong``, ``baseline`` (``{"clean": {"logit_diff",
"p_answer", "p_wrong"}, "corrupted": {...}}``), ``grids`` (each ``kind``, ``method``,
``direction``, ``metric``, ``rows``, ``columns``, ``values`` with ``None``/NaN for missing
cells), ``correlations`` (``method``, ``kind``, ``direction``, ``pearson_r``), ``directions``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from lrp_llm.export.common import as_dict, esc, fmt, legend
from lrp_llm.export.grid_svg import grid_svg

METHOD_NAMES = {
    "sweep": "patching sweep (measured)",
    "relp": "RelP (LRP attribution patching, estimate)",
    "atp": "attribution patching (gradient estimate)",
}
METRIC_NAMES = {"logit_diff": "logit difference", "recovery": "normalised recovery", "kl": "KL divergence"}


def _values(g: dict[str, Any]) -> np.ndarray:
    rows = [[float("nan") if v is None else float(v) for v in row] for row in g["values"]]
    return np.asarray(rows, dtype=np.float64).reshape(len(g["rows"]), len(g["columns"]))


def unpatched(d: dict[str, Any], direction: str, metric: str) -> float:
    """The metric of the unpatched base run (the rule of ``PatchingResult.unpatched``, for dicts)."""
    base = (d.get("baseline") or {}).get("corrupted" if direction == "denoise" else "clean") or {}
    if metric == "logit_diff":
        v = base.get("logit_diff")
    elif metric == "recovery":
        v = 0.0 if direction == "denoise" else 1.0
    else:
        v = base.get(metric)
    return float("nan") if v is None else float(v)


def grid_block(g: dict[str, Any], centre: float = 0.0) -> str:
    """One grid; colours are ``value - centre`` (negated for KL), hover shows both."""
    values = _values(g)
    rows, cols = [str(r) for r in g["rows"]], [str(c) for c in g["columns"]]
    kind = str(g["kind"])
    axis = "head" if kind == "head" else "position"
    centre = centre if centre == centre else 0.0  # NaN (unknown base) -> raw values
    change = (values - centre) * (-1.0 if g["metric"] == "kl" else 1.0)
    # hybrids: a row with no value at all is a layer whose block has no such part (no site there)
    absent = [r for r in range(len(rows)) if len(cols) and bool(np.isnan(values[r]).all())]

    def tip(r: int, c: int, _: float) -> str:
        if r in absent:
            return f"{rows[r]}: this layer's block has no {kind} site"
        site = f"{rows[r]}.head.{c}" if kind == "head" else rows[r]
        where = cols[c] if kind == "head" else f"position {c} {cols[c]!r}"
        v = float(values[r, c])
        return f"{site} @ {where}: {g['metric']} = {fmt(v)} (unpatched {fmt(centre)})"

    svg, scale = grid_svg(change, rows, cols, tip, label=f"{kind} grid")
    title = (
        f"{kind} \u00b7 {METHOD_NAMES.get(str(g['method']), g['method'])} \u00b7 {g['direction']} \u00b7 "
        f"{METRIC_NAMES.get(str(g['metric']), g['metric'])}"
    )
    return (
        f"<div class='pgrid'><h3>{esc(title)}</h3><p class='note'>rows: layers, columns: {axis}s"
        f"{_absent_note(rows, absent, kind)}</p>"
        f"{legend('largest change from the unpatched run in this grid', scale=scale)}"
        f"<div class='scroll'>{svg}</div></div>"
    )


def _absent_note(rows: list[str], absent: list[int], kind: str) -> str:
    if not absent:
        return ""
    names = ", ".join(rows[r].split(".")[1] if rows[r].startswith("layer.") else rows[r] for r in absent)
    return esc(f"; grey rows (layers {names}): their blocks have no {kind} site")


def render(result: Any) -> str:
    d = as_dict(result)
    obj = result if hasattr(result, "unpatched") else None

    def centre(g: dict[str, Any]) -> float:
        key = SimpleNamespace(direction=str(g["direction"]), metric=str(g["metric"]))
        return float(obj.unpatched(key)) if obj is not None else unpatched(d, key.direction, key.metric)

    base = d.get("baseline") or {}
    rows = []
    for name in ("clean", "corrupted"):
        b = base.get(name) or {}
        rows.append(
            f"<tr><th>{name}</th><td class='num'>{esc(fmt(b.get('logit_diff')))}</td>"
            f"<td class='num'>{esc(fmt(b.get('p_answer')))}</td><td class='num'>{esc(fmt(b.get('p_wrong')))}</td></tr>"
        )
    baseline = (
        f"<table class='list'><tr><th></th><th>logit({esc(repr(d.get('answer', '')))}) \u2212 "
        f"logit({esc(repr(d.get('wrong', '')))})</th><th>p answer</th><th>p wrong</th></tr>{''.join(rows)}</table>"
    )
    corr = "".join(
        f"<tr><td>{esc(METHOD_NAMES.get(str(c.get('method')), c.get('method')))}</td><td>{esc(c.get('kind'))}</td>"
        f"<td>{esc(c.get('direction'))}</td><td class='num'>{esc(fmt(c.get('pearson_r'), 3))}</td></tr>"
        for c in d.get("correlations", [])
    )
    corr_table = (
        "<h3>How well the estimates predict the sweep</h3><table class='list'><tr><th>estimate</th><th>sites</th>"
        f"<th>direction</th><th>Pearson r</th></tr>{corr}</table>"
        if corr
        else ""
    )
    directions = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in (d.get("directions") or {}).items())
    prompts = (
        f"<p>clean prompt: <span class='mono'>{esc(''.join(d.get('clean_tokens', [])))}</span><br>"
        f"corrupted prompt: <span class='mono'>{esc(''.join(d.get('corrupted_tokens', [])))}</span></p>"
    )
    grids = "".join(grid_block(g, centre(g)) for g in d.get("grids", []))
    return (
        "<section id='patching'><h2>Patching</h2>"
        f"{prompts}{baseline}{f'<ul>{directions}</ul>' if directions else ''}{corr_table}"
        "<p class='note'>Red: the patch moves the metric toward the clean run; blue: away from it; white: no "
        "change from the unpatched run. Hover a cell for its site and value.</p>"
        f"{grids or '<p class=note>No grid in this result.</p>'}</section>"
    )


__all__ = ["grid_block", "render", "unpatched"]
