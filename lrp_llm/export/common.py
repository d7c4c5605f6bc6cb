"""Shared pieces of the HTML reports: escaping, the colour scale, the page skeleton.

Every report is one file: inline CSS, inline SVG, images as ``data:`` URIs, an optional
small inline script, and a Content-Security-Policy that forbids the browser any network
request (``default-src 'none'``). Colours are 21 CSS classes on a symmetric scale
(``n10`` ... ``n1``, ``p0`` ... ``p10``: blue negative, white 0, red positive), used as
``background`` in HTML and ``fill`` in SVG, so a long input never carries a style per
token.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from lrp_llm.export.levels import LEVELS

# Only inline styles and scripts and data: images; no fetch, font, frame or form target.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)


def esc(value: Any) -> str:
    """Text for HTML content or a double-quoted attribute value (``<>&"'`` escaped).

    Lone surrogates (which UTF-8 cannot encode) become U+FFFD, so any ``str`` can be written.
    """
    return html.escape(clean_text(str(value)), quote=True)


# C0 controls other than tab, newline and carriage return, DEL and the C1 controls: HTML
# calls them parse errors and browsers show nothing; show a visible stand-in instead.
_CONTROLS = {c: 0x2400 + c for c in range(32) if c not in (9, 10, 13)} | {0x7F: 0x2421}
_CONTROLS |= {c: 0xFFFD for c in range(0x80, 0xA0)}


def clean_text(text: str) -> str:
    """``text`` with lone surrogates -> U+FFFD and control characters -> visible symbols
    (U+2400 block), so every ``str`` can be written as UTF-8 and shows up."""
    text = text.translate(_CONTROLS)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def level_class(k: int) -> str:
    return f"p{k}" if k >= 0 else f"n{-k}"


def colour(k: int) -> tuple[int, int, int]:
    """RGB of level ``k``: white at 0, pure-ish red at +LEVELS, blue at -LEVELS."""
    fade = int(round(255 * (1 - 0.85 * abs(k) / LEVELS)))
    return (255, fade, fade) if k >= 0 else (fade, fade, 255)


def scale_css() -> str:
    rules = []
    for k in range(-LEVELS, LEVELS + 1):
        r, g, b = colour(k)
        ink = "color:#fff;" if k <= -7 else ""
        rules.append(f".{level_class(k)}{{background:rgb({r},{g},{b});fill:rgb({r},{g},{b});{ink}}}")
    return "".join(rules)


BASE_CSS = (
    ":root{color-scheme:light}"
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em 2em;color:#111;background:#fff}"
    "h1{font-size:1.45em;margin:.2em 0 .6em}h2{font-size:1.15em;margin:1.6em 0 .5em;"
    "border-bottom:1px solid #ddd;padding-bottom:.2em}h3{font-size:1em;margin:1.2em 0 .4em}"
    "table.info{border-collapse:collapse;margin:.4em 0 1em}"
    "table.info th,table.info td{padding:.15em .8em .15em 0;text-align:left;vertical-align:top}"
    "table.info th{font-weight:600;color:#444;white-space:nowrap}"
    "table.list{border-collapse:collapse;margin:.5em 0;font-size:.92em}"
    "table.list th,table.list td{padding:.15em .6em;border-bottom:1px solid #eee;text-align:left}"
    "table.list td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".mono{font-family:ui-monospace,'SFMono-Regular',Menlo,Consolas,monospace}"
    ".legend{display:flex;align-items:center;gap:.6em;margin:.6em 0;font-size:.9em;color:#333;flex-wrap:wrap}"
    ".legend .bar{display:inline-flex;border:1px solid #bbb}.legend .bar span{width:1.1em;height:1em}"
    ".note{color:#555;font-size:.9em}.warn{color:#a40}"
    "svg text{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px;fill:#222}"
    "svg .axis{stroke:#888;stroke-width:1}svg .nan{fill:#eee}svg.grid rect{stroke:#fff;stroke-width:.5}"
    ".scroll{overflow-x:auto;max-width:100%}"
    "details>summary{cursor:pointer;color:#333}"
    "section{margin-bottom:1.5em}"
)


def legend(caption: str, scale_id: str | None = None, scale: float | None = None) -> str:
    """The colour bar from -1 to +1 with a caption; ``scale`` (shown as ``= value``) can be
    updated by a script through the element with id ``scale_id``."""
    cells = "".join(f'<span class="{level_class(k)}"></span>' for k in range(-LEVELS, LEVELS + 1))
    value = ""
    if scale is not None or scale_id:
        ident = f' id="{esc(scale_id)}"' if scale_id else ""
        value = f" = <span{ident} class='mono'>{esc(fmt(scale) if scale is not None else '')}</span>"
    return (
        f'<div class="legend"><span>&minus;1</span><span class="bar" aria-hidden="true">{cells}</span>'
        f"<span>+1</span><span>&times; {esc(caption)}{value}</span></div>"
    )


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for people: 4 significant digits, '—' for missing or NaN."""
    if value is None:
        return "—"
    v = float(value)
    if not math.isfinite(v):
        return "—" if math.isnan(v) else ("∞" if v > 0 else "−∞")
    return f"{v:.{digits}g}"


def info_table(rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column header table; values are escaped text (``None`` rows are skipped)."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows if v is not None)
    return f'<table class="info">{body}</table>'


def timings_text(seconds: float, timings: dict[str, float]) -> str:
    parts = [f"total {seconds:.3f} s"] + [f"{k} {float(v):.3f} s" for k, v in timings.items()]
    return ", ".join(parts)


def json_for_script(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>``, ``&``,
    U+2028/U+2029 survive unescaped, so no ``</script>`` can end the element early."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    for ch, rep in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, rep)
    return text


def page(title: str, body: Sequence[str], *, css: str = "", script: str | None = None) -> str:
    """The whole document: head with CSP and inline CSS, the body parts, an optional script."""
    tail = f"<script>{script}</script>" if script else ""
    return "".join(
        [
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="generator" content="xai-tui">',
            f"<title>{esc(title)}</title><style>{BASE_CSS}{scale_css()}{css}</style></head><body>",
            *body,
            tail,
            "</body></html>\n",
        ]
    )


def as_dict(result: Any) -> dict[str, Any]:
    """A result object as a plain dict: its ``to_dict()``, a dict as is, else its attributes."""
    if isinstance(result, dict):
        return result
    if hasattr(result, "to_dict"):
        return result.to_dict()
    return dict(vars(result))
