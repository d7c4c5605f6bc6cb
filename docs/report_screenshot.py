"""Make the README's HTML-report example and its screenshot on the bundled SmolLM2.

    .venv/bin/python docs/report_screenshot.py   # writes docs/report-example.html, docs/report.png

Same question as `make demo`; the screenshot is taken in headless Chromium (Debian
package `chromium`) with the answer token "France" selected.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONTEXT = (
    "The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in the 10th "
    "and 11th centuries gave their name to Normandy, a region in France."
)
QUESTION = "In what country is Normandy located? Answer briefly."


def main() -> None:
    from lrp_llm.checkpoints.loading import load_model
    from lrp_llm.engines.explain import explain
    from lrp_llm.export.report import explanation_report, write_report
    from tests.support.browser import Browser

    model, tokenizer = load_model(None)
    a = explain(model, tokenizer, QUESTION, context=CONTEXT, generate=12, model_name="SmolLM2-135M-Instruct (bundled)")
    html_path = ROOT / "docs" / "report-example.html"
    write_report(html_path, explanation_report(a))
    answer = [t.token for t in a.targets]
    # the answer token "France" (the README's example), else the first that is a word
    pick = next((i for i, t in enumerate(answer) if t.strip() == "France"), None)
    if pick is None:
        pick = next((i for i, t in enumerate(answer) if t.strip().isalpha()), 0)
    with Browser(width=1100, height=900) as b:
        b.open(html_path, f"#t{pick}")
        b.screenshot(ROOT / "docs" / "report.png")
        problems = b.problems()
    if problems:
        raise SystemExit(f"the report logged problems: {problems}")
    print("wrote", html_path.relative_to(ROOT), "and docs/report.png")


if __name__ == "__main__":
    main()
