"""Self-contained HTML heatmap of one or more :class:`~lrp_llm.bilrp.SimilarityExplanation`.

One file, inline CSS, no script and no network request. Each explanation is a table:
rows = tokens of ``a``, columns = tokens of ``b``, each cell coloured by its interaction
(red adds to the similarity, blue takes away; 21 CSS classes, symmetric scale
normalised per explanation) and showing the value on hover. Every text is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

_LEVELS = 10


def _level(value: float, scale: float) -> int:
    if scale <= 0:
        return 0
    return int(round(max(-1.0, min(1.0, value / scale)) * _LEVELS))


def _cls(level: int) -> str:
    return f"p{level}" if level >= 0 else f"n{-level}"


def _css() -> str:
    rules = []
    for k in range(-_LEVELS, _LEVELS + 1):
        fade = int(round(255 * (1 - abs(k) / _LEVELS)))
        rgb = (255, fade, fade) if k >= 0 else (fade, fade, 255)
        rules.append(f".{_cls(k)}{{background:rgb({rgb[0]},{rgb[1]},{rgb[2]})}}")
    return (
        "body{font-family:system-ui,sans-serif;margin:2em;color:#111}"
        ".block{margin:1.5em 0;padding:.8em;border:1px solid #ddd;border-radius:6px;overflow-x:auto}"
        "table.info td,table.info th{padding:.15em .6em;text-align:left}"
        "table.m{border-collapse:collapse;font-family:ui-monospace,monospace;font-size:.85em}"
        "table.m td{width:2.6em;height:1.6em;text-align:center;border:1px solid #f4f4f4;color:#222}"
        "table.m th{font-weight:normal;padding:0 .4em;white-space:pre}"
        "table.m thead th{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left;height:6em}"
        ".special{color:#999}.legend span{display:inline-block;padding:0 .6em}" + "".join(rules)
    )


def _matrix(e) -> str:
    esc = html.escape
    scale = float(abs(e.interactions).max()) if e.interactions.size else 0.0
    head = "".join(f"<th class='{'special' if e.special_b[j] else ''}'>{esc(t)}</th>" for j, t in enumerate(e.tokens_b))
    rows = []
    for i, tok in enumerate(e.tokens_a):
        cells = []
        for j in range(len(e.tokens_b)):
            v = float(e.interactions[i, j])
            label = esc(f"{e.tokens_a[i]} ~ {e.tokens_b[j]}: {v:+.5f}")
            cells.append(f"<td class='{_cls(_level(v, scale))}' title='{label}'>{v * 100:+.0f}</td>")
        cls = "special" if e.special_a[i] else ""
        rows.append(f"<tr><th class='{cls}'>{esc(tok)}</th>{''.join(cells)}</tr>")
    return f"<table class='m'><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _block(e) -> str:
    esc = html.escape
    pairs = ", ".join(f"{esc(e.tokens_a[i])} ~ {esc(e.tokens_b[j])} ({v:+.4f})" for i, j, v in e.top_pairs(5))
    rank = f"<tr><th>rank</th><td>{int(e.meta['rank'])}</td></tr>" if "rank" in e.meta else ""
    return (
        "<div class='block'><table class='info'>"
        f"{rank}<tr><th>a</th><td>{esc(e.text_a)}</td></tr>"
        f"<tr><th>b</th><td>{esc(e.text_b)}</td></tr>"
        f"<tr><th>cosine</th><td>{e.similarity:.4f}</td></tr>"
        f"<tr><th>dot</th><td>{e.dot:.4f}</td></tr>"
        f"<tr><th>sum of interactions</th><td>{e.interaction_sum:.4f} "
        f"({e.conservation:.3f} of the {esc(e.mode)})</td></tr>"
        f"<tr><th>top pairs</th><td>{pairs}</td></tr>"
        f"</table>{_matrix(e)}</div>"
    )


def similarity_html(explanations, title: str | None = None) -> str:
    """HTML page for one explanation or a ranked list of them (cell values are interactions x 100)."""
    items: Sequence = explanations if isinstance(explanations, (list, tuple)) else [explanations]
    esc = html.escape
    first = items[0]
    rules = f" ({first.rules})" if first.rules else ""
    title = title or f"{first.method}{rules} similarity explanation — {first.model}"
    legend = "".join(f"<span class='{_cls(k)}'>{k / _LEVELS:+.1f}</span>" for k in range(-_LEVELS, _LEVELS + 1, 5))
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{esc(title)}</title><style>{_css()}</style></head><body>",
            f"<h1>{esc(title)}</h1>",
            f"<p>pooling {esc(first.pooling)}, mode {esc(first.mode)}; rows: tokens of a, columns: tokens of b; "
            "cells: interaction &times; 100 (hover for the exact value)</p>",
            f"<p class='legend'>{legend} &times; max |interaction| per table; red adds to the similarity, "
            "blue takes away</p>",
            *(_block(e) for e in items),
            "</body></html>\n",
        ]
    )
