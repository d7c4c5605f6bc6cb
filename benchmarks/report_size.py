"""HTML report: file size, build time and browser times for large inputs, against a naive report.

    .venv/bin/python -m benchmarks.report_size      # writes benchmarks/results/report_size.md

Synthetic explanations (random relevance, N prompt tokens, T explained answer tokens,
each over every token before it). Side by side in the same process:

- **report**: ``lrp_llm.export.report.explanation_report`` (compact float32 data + classes,
  summed static view, script recolours; bounded no-script fallback);
- **naive**: what a straightforward exporter writes: one block per answer token, every
  token a ``<span>`` with an inline ``style`` colour and a ``title`` (the layout the
  issue warns about), built in this file for comparison only;
- **JSON**: ``Attribution.to_json()``, the same numbers as text.

Browser columns (headless Chromium over the DevTools pipe, when installed): time from
navigation to the load event, and for the report the time the script takes to recolour
the page after an answer token is clicked (measured inside the page).
"""

from __future__ import annotations

import html
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_table  # noqa: E402
from lrp_llm.export.report import explanation_report  # noqa: E402
from lrp_llm.results.attribution import Attribution, TargetRelevance  # noqa: E402

SIZES = [(200, 20), (1000, 50), (4000, 100), (8000, 200)]


def synthetic(n: int, t: int, seed: int = 0) -> Attribution:
    rng = np.random.default_rng(seed)
    words = ["the", " Norm", "ans", " were", " people", " in", " France", ",", ".", "\n", " 10", "th"]
    tokens = [words[i % len(words)] for i in range(n + t)]
    targets = [
        TargetRelevance(position=p, token=tokens[p], id=p, logit=5.0, probability=0.5, relevance=rng.normal(size=p))
        for p in range(n, n + t)
    ]
    return Attribution("synthetic", "attnlrp", tokens, list(range(n + t)), n, targets, 1.0)


def naive_html(a: Attribution) -> str:
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"]
    for t in a.targets:
        scale = float(np.abs(t.relevance).max())
        parts.append(f"<div><b>{html.escape(t.token)}</b><br>")
        for tok, v in zip(a.tokens, t.relevance):
            x = float(v) / scale
            fade = int(255 * (1 - abs(x)))
            rgb = f"255,{fade},{fade}" if x >= 0 else f"{fade},{fade},255"
            parts.append(f"<span style='background:rgb({rgb})' title='{v:.4g}'>{html.escape(tok)}</span>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)


def browser_times(path: Path, browser, select: bool) -> tuple[float, float | None]:
    t0 = time.perf_counter()
    browser.open(path, "#sum" if select else "")
    load = time.perf_counter() - t0
    if not select:
        return load, None
    ms = browser.eval(
        "(() => { const t0 = performance.now(); "
        "document.querySelector('nav.answers a[data-t=\"1\"]').click(); return performance.now() - t0; })()"
    )
    return load, float(ms) / 1000


def main() -> None:
    from tests.support.browser import Browser, find_chromium

    rows = []
    use_browser = find_chromium() is not None
    with tempfile.TemporaryDirectory() as tmp, Browser(timeout=300) if use_browser else _Null() as browser:
        for n, t in SIZES:
            a = synthetic(n, t)
            t0 = time.perf_counter()
            report = explanation_report(a)
            t_report = time.perf_counter() - t0
            t0 = time.perf_counter()
            naive = naive_html(a)
            t_naive = time.perf_counter() - t0
            t0 = time.perf_counter()
            js = a.to_json()
            t_json = time.perf_counter() - t0
            cells = ["—"] * 3
            if use_browser:
                p_report, p_naive = Path(tmp) / "r.html", Path(tmp) / "n.html"
                p_report.write_text(report, encoding="utf-8")
                p_naive.write_text(naive, encoding="utf-8")
                load_r, sel = browser_times(p_report, browser, True)
                load_n, _ = browser_times(p_naive, browser, False)
                assert not browser.problems(), browser.problems()
                cells = [f"{load_r:.2f} s", f"{sel * 1000:.0f} ms", f"{load_n:.2f} s"]
            values = sum(len(x.relevance) for x in a.targets)
            rows.append(
                [
                    f"{n} x {t}",
                    f"{values:,}",
                    f"{len(report) / 1e6:.2f} MB",
                    f"{len(naive) / 1e6:.1f} MB",
                    f"{len(js) / 1e6:.1f} MB",
                    f"{len(naive) / len(report):.1f}x",
                    f"{t_report:.2f} s",
                    f"{t_naive:.2f} s",
                    f"{t_json:.2f} s",
                    *cells,
                ]
            )
            print(rows[-1], flush=True)
    import platform

    write_table(
        "report_size",
        "HTML report size and speed on large inputs",
        [
            "prompt tokens x answer tokens",
            "relevance values",
            "report size",
            "naive size",
            "JSON size",
            "naive / report",
            "report build",
            "naive build",
            "JSON build",
            "report load (Chromium)",
            "recolour on click",
            "naive load (Chromium)",
        ],
        rows,
        [
            "synthetic explanations (random relevance); every answer token explained over every token before it",
            "report: lrp_llm.export.report.explanation_report; naive: one block per answer token, inline style per "
            "token (built in benchmarks/report_size.py); JSON: Attribution.to_json(); all in the same process",
            "Chromium: headless, DevTools over a pipe, navigation to load event; recolour: time of the click "
            "handler measured in the page",
            f"machine: {platform.machine()}, shared 2-core CI-like box; single run per size",
        ],
    )


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


if __name__ == "__main__":
    main()
