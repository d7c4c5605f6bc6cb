"""The token heatmap of an explanation: the prompt coloured by relevance for each answer token.

Layout (one ``<section id="tokens">``):

- a list of the explained answer tokens (links ``#t0``, ``#t1``, ... and ``#sum``);
- the token view and the word view (a CSS-only checkbox switches between them, so it
  works without script), both showing the *summed* view (all answer tokens) in the
  static markup;
- the relevance of every selection as data: one base64 string of little-endian float32
  per segment and selection inside ``<script type="application/json">`` (4 bytes per
  value, never a style per token), which the small inline script decodes to recolour
  the views when an answer token is chosen (click, ``#tN`` in the URL, arrow keys);
- a ``<noscript>`` fallback with one block per answer token (``id="tN"``, so the same
  links jump to it), limited to ``NOSCRIPT_BUDGET`` token spans in all; larger reports
  say how many answer tokens were left to the script.

Colours: a symmetric scale per selection, ``level = colour_level(v, max|v|)``
(:mod:`lrp_llm.export.levels`: 10 steps, half-steps away from zero); the script computes
the same levels with the same rule (``LEVEL_JS``).
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lrp_llm.analyses.words import word_spans, word_texts
from lrp_llm.export.common import esc, fmt, json_for_script, legend, level_class
from lrp_llm.export.levels import LEVEL_JS, colour_level
from lrp_llm.results.attribution import Attribution

NOSCRIPT_BUDGET = 30_000  # token spans in the no-script fallback blocks, all blocks together

CSS = (
    "nav.answers{display:flex;flex-wrap:wrap;gap:.25em;margin:.4em 0 .8em;max-height:12em;overflow-y:auto}"
    "nav.answers a{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre;padding:.1em .4em;"
    "border:1px solid #ccc;border-radius:4px;color:#111;text-decoration:none;background:#fafafa}"
    "nav.answers a:hover{border-color:#666}nav.answers a.sel{background:#222;color:#fff;border-color:#222}"
    ".toks{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-word;"
    "line-height:1.75;padding:.6em;border:1px solid #ddd;border-radius:6px;margin:.3em 0}"
    ".toks span{border-radius:2px}.toks span.x{color:#aaa;background:none}"
    ".toks span.tg{outline:2px solid #111;outline-offset:-1px;font-weight:700;color:#111}"
    ".toks span.a{text-decoration:underline dotted #888}"
    ".toggle-row{margin:.3em 0;font-size:.95em}#sel-info{font-size:.95em;color:#222;margin:.2em 0;min-height:1.2em}"
    ".wordview,.sc-w{display:none}#wordtoggle:checked~.views .wordview{display:block}"
    "#wordtoggle:checked~.views .tokview{display:none}#wordtoggle:checked~.views .sc-w{display:inline}"
    "#wordtoggle:checked~.views .sc-t{display:none}"
    ".block{margin:1em 0;padding:.6em;border:1px solid #ddd;border-radius:6px}"
)

# Decodes the selection's float32 arrays, computes the same levels as levels.colour_level (LEVEL_JS),
# and sets class and title of every token span; the spans are the children of each
# segment's container, in token order.
SCRIPT = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("xai-data").textContent);
  var cache = {};
  function dec(b64) {
    var s = atob(b64), n = s.length >> 2, dv = new DataView(new ArrayBuffer(s.length)), out = new Array(n), i;
    for (i = 0; i < s.length; i++) dv.setUint8(i, s.charCodeAt(i));
    for (i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
    return out;
  }
  LEVEL_FUNCTION
  function cls(k) { return k >= 0 ? "p" + k : "n" + (-k); }
  function num(v) { return String(parseFloat(v.toPrecision(4))); }
  function selection(t) {
    if (!(t in cache)) {
      var sel = t < 0 ? D.sum : D.sel[t];
      cache[t] = { v: sel.v.map(dec), m: sel.m };
    }
    return cache[t];
  }
  function paintView(prefix, sel, spansOf) {
    var nseg = sel.v.length, last = nseg - 1, marks = {}, s = 0, sAll = 0, kept = false, k, i, j, rows = [];
    var apart = {}, all = scaleToggle !== null && scaleToggle.checked;
    sel.m.forEach(function (p) { marks[p] = true; });
    (D.tp || []).forEach(function (p) { apart[p] = true; });
    for (k = 0; k < nseg; k++) {
      var arr = sel.v[k], items = spansOf(k), row = [];
      for (i = 0; i < items.length; i++) {
        var a = items[i][0], b = items[i][1], v = 0, mark = false, isApart = k === last && b > a;
        for (j = a; j < b; j++) {
          if (j < arr.length) v += arr[j];
          if (k === last && marks[j]) mark = true;
          if (!apart[j]) isApart = false;
        }
        var live = a < arr.length;
        if (live) {
          if (Math.abs(v) > sAll) sAll = Math.abs(v);
          if (all || !isApart) { kept = true; if (Math.abs(v) > s) s = Math.abs(v); }
        }
        row.push([live, v, mark, k === last && a >= D.pl]);
      }
      rows.push(row);
    }
    if (!kept) s = sAll;  // every shown value is a special or template token's: the scale of all
    for (k = 0; k < nseg; k++) {
      var el = document.getElementById(prefix + k).children;
      for (i = 0; i < el.length; i++) {
        var r = rows[k][i], c = r[0] ? cls(lvl(r[1], s)) : "x";
        if (r[2]) c += " tg";
        if (r[3]) c += " a";
        el[i].className = c;
        el[i].title = r[2] && !r[0] ? "explained token" : (r[0] ? num(r[1]) : "after the explained token");
      }
    }
    return s;
  }
  var scaleToggle = document.getElementById("scaletoggle");
  if (scaleToggle !== null) scaleToggle.addEventListener("change", function () { select(current); });
  var links = document.querySelectorAll("nav.answers a");
  function select(t) {
    if (t >= D.sel.length || t < (D.sel.length > 1 ? -1 : 0)) return;
    var sel = selection(t);
    var st = paintView("tv", sel, function (k) {
      var n = document.getElementById("tv" + k).children.length, out = [], i;
      for (i = 0; i < n; i++) out.push([i, i + 1]);
      return out;
    });
    var sw = paintView("wv", sel, function (k) {
      var w = D.w[k], out = [], i;
      for (i = 0; i + 1 < w.length; i++) out.push([w[i], w[i + 1]]);
      return out;
    });
    var lr = document.querySelectorAll("div.lr[id]"), want = t < 0 ? "lr-sum" : "lr-t" + t;
    for (var q = 0; q < lr.length; q++) lr[q].hidden = lr[q].id !== want;
    document.getElementById("scale-t").textContent = num(st);
    document.getElementById("scale-w").textContent = num(sw);
    for (var i = 0; i < links.length; i++) {
      var on = Number(links[i].getAttribute("data-t")) === t;
      links[i].className = on ? "sel" : "";
      if (on) document.getElementById("sel-info").textContent = links[i].title;
    }
    current = t;
  }
  var current = D.def;
  function fromHash() {
    var h = location.hash;
    if (h === "#sum") return -1;
    var m = /^#t(\d+)$/.exec(h);
    return m ? Number(m[1]) : D.def;
  }
  window.addEventListener("hashchange", function () { select(fromHash()); });
  document.addEventListener("keydown", function (e) {
    if (e.target && (e.target.tagName === "INPUT" || e.target.tagName === "TEXTAREA")) return;
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      var t = current + (e.key === "ArrowRight" ? 1 : -1);
      if (t >= (D.sel.length > 1 ? -1 : 0) && t < D.sel.length) {
        history.replaceState(null, "", t < 0 ? "#sum" : "#t" + t);
        select(t);
      }
    }
  });
  select(fromHash());
  document.documentElement.setAttribute("data-ready", "1");
})();
""".replace("LEVEL_FUNCTION", LEVEL_JS)


@dataclass
class Segment:
    """Tokens shown in one box: the whole sequence (causal LMs), or the encoder's source
    and the decoder's tokens (encoder-decoders). ``values[t]`` is the relevance target
    ``t`` gives these tokens, ``values[t]``'s length is where the explained part ends."""

    label: str | None
    tokens: list[str]
    values: list[np.ndarray]  # one float32 array per target
    total: np.ndarray  # the summed view (all targets)
    words: list[tuple[int, int]]


def segments(a: Attribution) -> list[Segment]:
    """The boxes of the report (the last one holds the answer and its target positions)."""
    n_dec = len(a.tokens)
    dec_vals = [np.asarray(t.relevance, dtype=np.float32) for t in a.targets]
    dec_len = max((len(v) for v in dec_vals), default=0)
    dec_total = np.zeros(dec_len, dtype=np.float64)
    for v in dec_vals:
        dec_total[: len(v)] += v
    out = []
    if a.source_tokens is not None:
        n_src = len(a.source_tokens)
        src_vals = [
            np.asarray(t.source_relevance, dtype=np.float32)
            if t.source_relevance is not None
            else np.zeros(n_src, dtype=np.float32)
            for t in a.targets
        ]
        src_total = np.zeros(n_src, dtype=np.float64)
        for v in src_vals:
            src_total[: len(v)] += v
        out.append(
            Segment(
                "source", list(a.source_tokens), src_vals, src_total.astype(np.float32), word_spans(a.source_tokens)
            )
        )
    breaks = [a.prompt_length] if 0 < a.prompt_length < n_dec else []
    label = "decoder" if a.source_tokens is not None else None
    out.append(Segment(label, list(a.tokens), dec_vals, dec_total.astype(np.float32), word_spans(a.tokens, breaks)))
    return out


def _b64(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def shown(token: str) -> str:
    """A token as displayed: newlines get a visible arrow, an empty token a placeholder."""
    if not token:
        return "\u2205"
    return token.replace("\n", "\u21b5\n")


@lru_cache(maxsize=1 << 16)
def _token_html(token: str) -> str:
    return esc(shown(token))


@dataclass
class _Cell:
    live: bool  # inside the explained part
    value: float
    mark: bool  # holds an explained (target) position
    answer: bool  # part of the answer


def view_cells(
    segs: list[Segment],
    values: list[np.ndarray],
    marks: set[int],
    prompt_length: int,
    words: bool,
    apart: Collection[int] = (),
) -> tuple[list[list[_Cell]], float]:
    """Per segment, the cells of one view of one selection, and the view's colour scale.

    The same arithmetic as the script (float32 values summed in float64 in token order),
    so static markup and recoloured page agree. ``apart``: positions (in the last segment) of
    special and chat-template tokens; a cell made of them only is left out of the scale
    (:func:`lrp_llm.export.levels.display_scale`).
    """
    rows: list[list[_Cell]] = []
    scale = scale_all = 0.0
    kept = False
    apart = set(apart)
    last = len(segs) - 1
    for k, (seg, arr) in enumerate(zip(segs, values)):
        spans = seg.words if words else [(i, i + 1) for i in range(len(seg.tokens))]
        n = len(arr)
        row = []
        for s, e in spans:
            v = 0.0
            for j in range(s, min(e, n)):
                v += float(arr[j])
            mark = k == last and not marks.isdisjoint(range(s, e))
            live = s < n
            if live:
                scale_all = max(scale_all, abs(v))
                if not (k == last and e > s and apart.issuperset(range(s, e))):
                    kept = True
                    scale = max(scale, abs(v))
            row.append(_Cell(live, v, mark, k == last and s >= prompt_length))
        rows.append(row)
    return rows, scale if kept else scale_all


def _spans(cells: list[_Cell], texts: list[str], scale: float) -> str:
    out = []
    for c, text in zip(cells, texts):
        cls = level_class(colour_level(c.value, scale)) if c.live else "x"
        if c.mark:
            cls += " tg"
        if c.answer:
            cls += " a"
        title = (
            "explained token" if c.mark and not c.live else (fmt(c.value) if c.live else "after the explained token")
        )
        out.append(f'<span class="{cls}" title="{esc(title)}">{_token_html(text)}</span>')
    return "".join(out)


def _view(segs, values, marks, prompt_length, words: bool, prefix: str, apart=()) -> tuple[str, float]:
    rows, scale = view_cells(segs, values, marks, prompt_length, words, apart)
    parts = []
    for k, (seg, cells) in enumerate(zip(segs, rows)):
        texts = word_texts(seg.tokens, seg.words) if words else seg.tokens
        label = f"<i>{esc(seg.label)}</i>" if seg.label else ""
        parts.append(f'{label}<div class="toks" id="{prefix}{k}">{_spans(cells, texts, scale)}</div>')
    return "".join(parts), scale


def target_title(a: Attribution, i: int) -> str:
    t = a.targets[i]
    title = (
        f"[{i}] {t.token!r} at position {t.position}: logit {fmt(t.logit)}, p {fmt(t.probability)}, "
        f"\u03a3 relevance {fmt(t.relevance_sum)}, \u03a3 relevance / logit {fmt(t.conservation)}"
    )
    held = a.meta.get("held_apart")
    if held is not None and i < len(held) and t.logit:
        # attnlrp-sink: the softmax relevance of the first position, held apart (see lrp_llm.archs.attention_variants)
        title += f", held apart {fmt(held[i])}, (\u03a3 + held) / logit {fmt((t.relevance_sum + held[i]) / t.logit)}"
    return title


def render(a: Attribution, *, noscript_budget: int = NOSCRIPT_BUDGET) -> tuple[str, str]:
    """The token section's HTML and its script (the caller puts the script at the page's end)."""
    segs = segments(a)
    n_t = len(a.targets)
    positions = [t.position for t in a.targets]
    default = 0 if n_t == 1 else -1
    if n_t == 0:
        return "<section id='tokens'><h2>Tokens</h2><p class='note'>No token was explained.</p></section>", ""

    if default < 0:
        static_values, static_marks = [s.total for s in segs], set(positions)
        static_info = f"all {n_t} answer tokens (summed relevance); choose one to see its own"
    else:
        static_values, static_marks = [s.values[0] for s in segs], {positions[0]}
        static_info = target_title(a, 0)
    apart = a.meta.get("template_positions", ()) if a.source_tokens is None else ()
    tok_html, tok_scale = _view(segs, static_values, static_marks, a.prompt_length, False, "tv", apart)
    word_html, word_scale = _view(segs, static_values, static_marks, a.prompt_length, True, "wv", apart)

    links = []
    if n_t > 1:
        cls = ' class="sel"' if default < 0 else ""
        links.append(f'<a href="#sum" data-t="-1"{cls} title="all answer tokens, summed relevance">\u03a3 all</a>')
    for i, t in enumerate(a.targets):
        cls = ' class="sel"' if default == i else ""
        links.append(f'<a href="#t{i}" data-t="{i}"{cls} title="{esc(target_title(a, i))}">{esc(shown(t.token))}</a>')

    data = {
        "pl": a.prompt_length,
        "def": default,
        "sel": [{"v": [_b64(s.values[i]) for s in segs], "m": [positions[i]]} for i in range(n_t)],
        "sum": {"v": [_b64(s.total) for s in segs], "m": positions},
        "w": [[s for s, _ in seg.words] + [len(seg.tokens)] for seg in segs],
        "tp": [int(p) for p in apart],
    }

    caption = "max |relevance| of the shown answer token" + (
        ", special / template tokens left out unless ticked below" if apart else ""
    )
    scales = (
        f"<span class='sc-t'>{legend(caption, 'scale-t', tok_scale)}</span>"
        f"<span class='sc-w'>{legend(caption.replace('relevance', 'word relevance'), 'scale-w', word_scale)}</span>"
    )
    html = [
        "<section id='tokens'><h2>Relevance of each input token</h2>",
        "<p class='note'>Red tokens support the chosen answer token, blue ones speak against it; the explained "
        "token is outlined, tokens after it are grey, answer tokens are underlined. Hover a token for its value. "
        "Choose an answer token (or use the arrow keys):</p>",
        f"<nav class='answers'>{''.join(links)}</nav>",
        f"<div id='sel-info'>{esc(static_info)}</div>",
        "<div class='heat'><input type='checkbox' id='wordtoggle'>",
        "<label for='wordtoggle' class='toggle-row'> words (relevance of the sub-word tokens summed per word)</label>",
        (
            "<input type='checkbox' id='scaletoggle'><label for='scaletoggle' class='toggle-row'> colour scale "
            "over special and chat-template tokens too</label>"
            if apart
            else ""
        ),
        f"<div class='views'>{scales}<div class='tokview'>{tok_html}</div><div class='wordview'>{word_html}</div>",
        "</div></div>",
        f"<script type='application/json' id='xai-data'>{json_for_script(data)}</script>",
        _noscript(a, segs, noscript_budget),
        "</section>",
    ]
    return "".join(html), SCRIPT


def _noscript(a: Attribution, segs: list[Segment], budget: int) -> str:
    """One block per answer token (token level) while the budget of spans lasts."""
    per_block = sum(len(s.tokens) for s in segs)
    fits = len(a.targets) if per_block == 0 else min(len(a.targets), max(1, budget // per_block))
    parts = ["<noscript><h3>Every answer token</h3>"]
    for i in range(fits):
        values = [s.values[i] for s in segs]
        apart = a.meta.get("template_positions", ()) if a.source_tokens is None else ()
        body, scale = _view(segs, values, {a.targets[i].position}, a.prompt_length, False, f"b{i}-", apart)
        parts.append(
            f"<div class='block' id='t{i}'><div>{esc(target_title(a, i))}; colour scale "
            f"\u00b1{esc(fmt(scale))}</div>{body}</div>"
        )
    if fits < len(a.targets):
        parts.append(
            f"<p class='warn'>{len(a.targets) - fits} more answer tokens are shown only with JavaScript "
            "(or read them from the JSON export): the input is too long to repeat it for each.</p>"
        )
    parts.append("</noscript>")
    return "".join(parts)


def targets_table(a: Attribution, top: int = 3) -> str:
    """Per answer token: logit, probability, relevance sum, conservation, most relevant tokens."""
    seq2seq = a.source_tokens is not None
    rows = []
    for i, t in enumerate(a.targets):
        tops = ", ".join(
            f"{shown(a.tokens[j])!r} {fmt(float(t.relevance[j]), 3)}" for j in t.top(top) if j < len(t.relevance)
        )
        shares = ""
        if seq2seq:  # how much of the relevance each side holds (Σ|R| of the side over both)
            source, decoder = t.side_shares()
            shares = f"<td class='num'>{source:.0%}</td><td class='num'>{decoder:.0%}</td>"
        rows.append(
            f"<tr><td class='num'>{i}</td><td class='mono'>{esc(repr(t.token))}</td><td class='num'>{t.position}</td>"
            f"<td class='num'>{esc(fmt(t.logit))}</td><td class='num'>{esc(fmt(t.probability))}</td>"
            f"<td class='num'>{esc(fmt(t.relevance_sum))}</td><td class='num'>{esc(fmt(t.conservation))}</td>"
            f"{shares}<td class='mono'>{esc(tops)}</td></tr>"
        )
    share_heads = "<th>source share</th><th>decoder share</th>" if seq2seq else ""
    return (
        "<details><summary>Every answer token: logit, probability, conservation, most relevant tokens</summary>"
        "<table class='list'><tr><th>#</th><th>token</th><th>position</th><th>logit</th><th>p</th>"
        f"<th>\u03a3 relevance</th><th>\u03a3 / logit</th>{share_heads}<th>most relevant</th></tr>"
        f"{''.join(rows)}</table></details>"
    )


__all__ = ["CSS", "NOSCRIPT_BUDGET", "SCRIPT", "Segment", "render", "segments", "targets_table", "view_cells"]
