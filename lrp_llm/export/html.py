"""Self-contained HTML heatmap of an :class:`~lrp_llm.attribution.Attribution`.

One file, inline CSS, no script needed and no network request: one block per explained
token. Every token and text is escaped. Colours come from 21 CSS classes (symmetric
scale), so long inputs do not carry a style per token.
"""

from __future__ import annotations

import html

from ..attribution import Attribution

_LEVELS = 10


def _level(value: float, scale: float) -> int:
    if scale <= 0:
        return 0
    return int(round(max(-1.0, min(1.0, value / scale)) * _LEVELS))


def _css() -> str:
    rules = []
    for k in range(-_LEVELS, _LEVELS + 1):
        fade = int(round(255 * (1 - abs(k) / _LEVELS)))
        rgb = (255, fade, fade) if k >= 0 else (fade, fade, 255)
        name = f"p{k}" if k >= 0 else f"n{-k}"
        rules.append(f".{name}{{background:rgb({rgb[0]},{rgb[1]},{rgb[2]})}}")
    return (
        "body{font-family:system-ui,sans-serif;margin:2em;color:#111;max-width:70em}"
        ".tok{white-space:pre-wrap;font-family:ui-monospace,monospace;border-radius:2px}"
        ".target{outline:2px solid #222;font-weight:bold}.after{color:#999}"
        ".block{margin:1.2em 0;padding:.8em;border:1px solid #ddd;border-radius:6px;line-height:1.7}"
        "table{border-collapse:collapse}td,th{padding:.2em .6em;text-align:left;border-bottom:1px solid #eee}"
        ".legend span{display:inline-block;padding:0 .6em}" + "".join(rules)
    )


def _cls(level: int) -> str:
    return f"p{level}" if level >= 0 else f"n{-level}"


def attribution_html(a: Attribution, title: str | None = None) -> str:
    esc = html.escape
    title = title or f"{a.method} explanation — {a.model}"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{_css()}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        "<table>",
        f"<tr><th>model</th><td>{esc(a.model)}</td></tr>",
        f"<tr><th>method</th><td>{esc(a.method)}</td></tr>",
        f"<tr><th>date</th><td>{esc(str(a.meta.get('date', '')))}</td></tr>",
        f"<tr><th>seconds</th><td>{a.seconds:.2f}</td></tr>",
        f"<tr><th>answer</th><td>{esc(a.answer)}</td></tr>",
        "</table>",
        "<p class='legend'>",
        *(f"<span class='{_cls(k)}'>{k / _LEVELS:+.1f}</span>" for k in range(-_LEVELS, _LEVELS + 1, 5)),
        " &times; max |relevance| per block; red supports the token, blue speaks against it</p>",
    ]
    for i, t in enumerate(a.targets):
        scale = float(abs(t.relevance).max()) if len(t.relevance) else 0.0
        parts.append(
            f"<div class='block' id='t{i}'><div><b>[{i}] {esc(repr(t.token))}</b> logit {t.logit:.3f}, "
            f"p {t.probability:.3f}, &Sigma; relevance / logit {t.conservation:.3f}</div>"
        )
        if t.source_relevance is not None and a.source_tokens is not None:
            # encoder-decoders: the source tokens first, on the same colour scale as the decoder side
            scale = max(scale, float(abs(t.source_relevance).max()) if len(t.source_relevance) else 0.0)
            parts.append("<div><i>source</i> ")
            for tok, v in zip(a.source_tokens, t.source_relevance):
                parts.append(f"<span class='tok {_cls(_level(float(v), scale))}' title='{v:.4g}'>{esc(tok)}</span> ")
            parts.append("</div><div><i>decoder</i> ")
        for j, tok in enumerate(a.tokens[: t.position + 1]):
            if j < t.position:
                v = float(t.relevance[j])
                parts.append(f"<span class='tok {_cls(_level(v, scale))}' title='{v:.4g}'>{esc(tok)}</span>")
            else:
                parts.append(f"<span class='tok target'>{esc(tok)}</span>")
        if t.source_relevance is not None and a.source_tokens is not None:
            parts.append("</div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)
