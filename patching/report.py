"""A self-contained HTML page of a :class:`PatchingResult`: one coloured table per grid.

No scripts, no external resources; every string from the model or the user is escaped.
Colours: red = the patch moves the metric toward the clean run, blue = away, white = no
change; each grid is scaled by its own largest |value|.
"""

from __future__ import annotations

from html import escape

import numpy as np

from .result import DIRECTION_HELP, Grid, PatchingResult

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.grid{border-collapse:collapse;font-size:11px;margin-bottom:1.5em}
table.grid td,table.grid th{border:1px solid #ddd;padding:2px 4px;text-align:right;min-width:2.6em}
table.grid th{background:#f4f4f4;font-weight:normal;white-space:pre}
table.grid th.row{text-align:left}
.meta td{padding:1px 8px}
h2{font-size:1.1em;margin-top:1.6em}
.note{color:#666;font-size:.9em}
"""


def _colour(v: float, scale: float) -> str:
    if not np.isfinite(v) or scale <= 0:
        return "#ffffff"
    x = max(-1.0, min(1.0, v / scale))
    fade = int(round(255 * (1 - abs(x))))
    return f"#ff{fade:02x}{fade:02x}" if x >= 0 else f"#{fade:02x}{fade:02x}ff"


def _centre(g: Grid, result: PatchingResult) -> np.ndarray:
    """Values shown as change from the unpatched base run (what the colour means)."""
    change = g.values.astype(np.float64) - result.unpatched(g)
    # KL from the clean run: a drop is a move toward it
    return -change if g.metric == "kl" else change


def grid_html(g: Grid, result: PatchingResult) -> str:
    shown = _centre(g, result)
    finite = np.abs(shown[np.isfinite(shown)])
    scale = float(finite.max()) if finite.size else 0.0
    head = "".join(f"<th>{escape(c)}</th>" for c in g.columns)
    rows = []
    for r, name in enumerate(g.rows):
        cells = []
        for c in range(len(g.columns)):
            v = float(g.values[r, c])
            text = "" if not np.isfinite(v) else f"{v:.2f}"
            title = escape(f"{g.site(r, c)}: {g.metric} = {v:.4g}")
            cells.append(f'<td style="background:{_colour(float(shown[r, c]), scale)}" title="{title}">{text}</td>')
        rows.append(f'<tr><th class="row">{escape(name)}</th>{"".join(cells)}</tr>')
    title = f"{g.kind} · {g.method} · {g.direction} · {g.metric}"
    return (
        f"<h2>{escape(title)}</h2>"
        f'<p class="note">{escape(DIRECTION_HELP.get(g.direction, ""))}</p>'
        f'<table class="grid"><tr><th></th>{head}</tr>{"".join(rows)}</table>'
    )


def result_html(result: PatchingResult) -> str:
    """The whole report as one HTML string."""
    meta = [
        ("model", result.model),
        ("clean", "".join(result.clean_tokens)),
        ("corrupted", "".join(result.corrupted_tokens)),
        ("answer / wrong", f"{result.answer!r} / {result.wrong!r}"),
    ]
    for name, b in result.baseline.items():
        meta.append(
            (
                f"{name} run",
                f"logit diff {b['logit_diff']:.3f}, p(answer) {b['p_answer']:.3f}, p(wrong) {b['p_wrong']:.3f}",
            )
        )
    meta_rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in meta)
    corr = ""
    if result.correlations:
        lines = "".join(
            f"<tr><td>{escape(str(c['kind']))}</td><td>{escape(str(c['direction']))}</td>"
            f"<td>{escape(str(c['method']))}</td><td>{float(c['pearson_r']):.3f}</td></tr>"
            for c in result.correlations
        )
        corr = (
            "<h2>Attribution patching vs the real sweep (Pearson r of the logit difference)</h2>"
            f'<table class="grid"><tr><th>site</th><th>direction</th><th>method</th><th>r</th></tr>{lines}</table>'
        )
    grids = "".join(grid_html(g, result) for g in result.grids)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>xai-tui patching report</title>"
        f"<style>{_CSS}</style></head><body><h1>Activation patching</h1>"
        f'<table class="meta">{meta_rows}</table>{corr}{grids}'
        '<p class="note">Red: toward the clean run; blue: away from it; each grid scaled by its own largest change. '
        "Hover a cell for its site name and value.</p></body></html>"
    )
