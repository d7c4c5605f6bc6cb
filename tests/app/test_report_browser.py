"""The reports in a real browser: headless Chromium opens them from disk with the network
off, no console error or warning appears, nothing but the file is loaded, choosing an
answer token recolours the prompt exactly as the Python side computes it, the word view
and the no-script fallback work, and a screenshot can be taken.

Chromium comes from the Debian package ``chromium`` (``.ci/run`` installs it); the tests
skip only when no Chromium binary exists on this machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from lrp_llm.export import token_section
from lrp_llm.export.common import level_class
from lrp_llm.export.levels import colour_level
from lrp_llm.export.report import explanation_report, image_report, patching_report, similarity_report, write_report
from tests.support.browser import Browser, find_chromium
from tests.support.reports import NASTY, make_attribution

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (.ci/run installs it)")

TOKENS = (
    ["<s>", "The", " Norm", "ans", " <script>alert(1)</script>", " lived", " in", " Normandy", ",", "\n"]
    + [f" filler{i}" for i in range(30)]
    + [" France", ".", " Where", "?", " It", " is", " in", " France", "."]
)
PROMPT = len(TOKENS) - 5

CLASSES = "Array.from(document.getElementById('{view}').children).map(e => e.className)"


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    a = make_attribution(TOKENS, PROMPT, model="tiny </title><b>model", seed=3)
    path = tmp_path_factory.mktemp("browser") / "report.html"
    write_report(path, explanation_report(a))
    return a, path


def expected_classes(a, selection: int, words: bool) -> list[str]:
    """What the page must show, from the Python side of the report."""
    (seg,) = token_section.segments(a)
    if selection < 0:
        values, marks = [seg.total], {t.position for t in a.targets}
    else:
        values, marks = [seg.values[selection]], {a.targets[selection].position}
    (cells,), scale = token_section.view_cells([seg], values, marks, a.prompt_length, words)
    out = []
    for c in cells:
        cls = level_class(colour_level(c.value, scale)) if c.live else "x"
        out.append(cls + (" tg" if c.mark else "") + (" a" if c.answer else ""))
    return out


def test_choosing_an_answer_token_recolours_the_prompt(browser, report, tmp_path):
    a, path = report
    browser.open(path, "#t1")
    assert browser.eval("document.documentElement.getAttribute('data-ready')") == "1"
    first = browser.eval(CLASSES.format(view="tv0"))
    assert first == expected_classes(a, 1, words=False)
    # click another answer token: the colours change, to exactly the Python levels
    browser.eval("document.querySelector('nav.answers a[data-t=\"3\"]').click()")
    second = browser.eval(CLASSES.format(view="tv0"))
    assert second == expected_classes(a, 3, words=False) and second != first
    assert browser.eval("location.hash") == "#t3"
    assert browser.eval("document.querySelector('nav.answers a.sel').getAttribute('data-t')") == "3"
    # the long-range section follows the selection
    shown_lr = "Array.from(document.querySelectorAll('div.lr')).filter(d => !d.hidden).map(d => d.id)"
    assert browser.eval(shown_lr) == ["lr-t3"]
    # hover text is the value
    j = int(np.argmax(np.abs(a.targets[3].relevance)))
    shown = float(browser.eval(f"document.getElementById('tv0').children[{j}].title"))
    assert shown == pytest.approx(float(a.targets[3].relevance[j]), rel=1e-3)
    # the summed view and the arrow keys
    browser.eval("document.querySelector('nav.answers a[data-t=\"-1\"]').click()")
    assert browser.eval(CLASSES.format(view="tv0")) == expected_classes(a, -1, words=False)
    assert browser.eval(shown_lr) == ["lr-sum"]
    browser.eval("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'}))")
    assert browser.eval(CLASSES.format(view="tv0")) == expected_classes(a, 0, words=False)
    # the word view: visible after ticking the box, coloured per word
    assert browser.eval("document.getElementById('wv0').offsetParent") is None
    browser.eval("document.getElementById('wordtoggle').click()")
    assert browser.eval("document.getElementById('wv0').offsetParent !== null")
    assert browser.eval("document.getElementById('tv0').offsetParent") is None
    assert browser.eval(CLASSES.format(view="wv0")) == expected_classes(a, 0, words=True)
    # the prompt's <script> token is text, and it never ran
    assert browser.eval("document.querySelectorAll('script').length") == 2
    assert browser.eval("document.getElementById('tv0').children[4].textContent") == TOKENS[4]
    browser.screenshot(tmp_path / "shot.png")
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert browser.problems() == []
    assert all(url.startswith("file:") for url in browser.requests), browser.requests


def test_without_script_every_answer_token_is_still_shown(browser, report):
    a, path = report
    browser.open(path, scripts=False)
    try:
        assert browser.eval("document.documentElement.getAttribute('data-ready')") is None
    finally:
        browser.call("Emulation.setScriptExecutionDisabled", {"value": False}, session=True)
    # the static page shows the summed view, and the fallback one block per answer token
    assert browser.eval(CLASSES.format(view="tv0")) == expected_classes(a, -1, words=False)
    blocks = browser.eval("Array.from(document.querySelectorAll('div.block')).map(b => b.id)")
    assert blocks == [f"t{i}" for i in range(len(a.targets))]
    assert browser.eval("Array.from(document.querySelectorAll('div.lr')).filter(d => !d.hidden).length") == 1
    assert browser.eval(CLASSES.format(view="b2-0")) == expected_classes(a, 2, words=False)
    # the word view works by CSS alone
    browser.eval("document.getElementById('wordtoggle').click()")
    assert browser.eval("document.getElementById('wv0').offsetParent !== null")
    assert browser.problems() == []


def test_other_reports_open_cleanly(browser, tmp_path):
    from lrp_llm.results.image import ImageAttribution
    from lrp_llm.results.similarity import SimilarityExplanation
    from patching.result import Grid, PatchingResult

    rng = np.random.default_rng(0)
    ta, tb = ["[CLS]", "a", " <b>cat", "[SEP]"], ["[CLS]", "the", "</svg>kitten", "[SEP]"]
    e = SimilarityExplanation(
        model="MiniLM", method="bilrp", rules="cp-lrp", pooling="mean", mode="cosine", text_a="a <b>cat",
        text_b="the </svg>kitten", tokens_a=ta, tokens_b=tb, interactions=rng.normal(size=(4, 4)), similarity=0.5,
        dot=2.0, interaction_sum=0.5, seconds=0.1, special_a=[True, False, False, True],
        special_b=[True, False, False, True],
    )  # fmt: skip
    g = Grid("resid", "sweep", "denoise", "recovery", ["layer.0.resid", "layer.1.resid"], ["a", "<b>"],
             [[0.1, float("nan")], [-0.4, 1.0]])  # fmt: skip
    r = PatchingResult(
        model="tiny", clean_tokens=["a", "<b>"], corrupted_tokens=["c", "d"], clean_ids=[1, 2], corrupted_ids=[3, 4],
        answer=" x", wrong=" y", answer_id=5, wrong_id=6,
        baseline={"clean": {"logit_diff": 1.0, "p_answer": 0.6, "p_wrong": 0.1},
                  "corrupted": {"logit_diff": -1.0, "p_answer": 0.1, "p_wrong": 0.6}},
        grids=[g], correlations=[{"method": "relp", "kind": "resid", "direction": "denoise", "pearson_r": 0.9}],
    )  # fmt: skip
    img = ImageAttribution(
        model="vit", method="cp-lrp", label="cat", label_id=1, logit=2.0, probability=0.7,
        image=rng.integers(0, 255, size=(16, 16, 3)), pixel_relevance=rng.normal(size=(16, 16)),
        patch_relevance=rng.normal(size=(4, 4)), patch_size=(4, 4), top_labels=[("cat", 0.7)],
    )  # fmt: skip
    for name, doc in (("s", similarity_report([e])), ("p", patching_report(r)), ("i", image_report(img))):
        path = tmp_path / f"{name}.html"
        write_report(path, doc)
        mark = len(browser.events)
        browser.open(path)
        assert browser.eval("document.querySelectorAll('svg').length") >= 1
        assert browser.problems() == [], name
        assert all(ev["method"] != "Runtime.exceptionThrown" for ev in browser.events[mark:])
    assert all(url.startswith(("file:", "data:")) for url in browser.requests), browser.requests


def test_nasty_prompt_report_has_no_console_error(browser, tmp_path):
    tokens = ["<s>", *NASTY, " end"]
    path = tmp_path / "nasty.html"
    write_report(path, explanation_report(make_attribution(tokens, len(tokens) - 3)))
    browser.open(path, "#t1")
    assert browser.eval("document.querySelectorAll('script').length") == 2
    texts = browser.eval("Array.from(document.getElementById('tv0').children).map(e => e.textContent)")
    assert texts[1] == NASTY[0] and texts[2] == NASTY[1]
    assert browser.problems() == []


def test_template_tokens_are_left_out_of_the_scale_until_ticked(browser, tmp_path):
    a = make_attribution(TOKENS, PROMPT, model="tiny", seed=5)
    a.meta["template_positions"] = [0, 9]  # "<s>" and the newline
    for t in a.targets:  # the first token soaks up relevance, as a chat template's first token does
        t.relevance[0] = -50.0 * float(np.abs(t.relevance[1:]).max())
    path = tmp_path / "template.html"
    write_report(path, explanation_report(a))
    browser.open(path, "#t1")
    (seg,) = token_section.segments(a)
    values, marks = [seg.values[1]], {a.targets[1].position}

    def classes(apart):
        (cells,), scale = token_section.view_cells([seg], values, marks, a.prompt_length, False, apart)
        return [
            (level_class(colour_level(c.value, scale)) if c.live else "x")
            + (" tg" if c.mark else "")
            + (" a" if c.answer else "")
            for c in cells
        ]

    left_out, with_all = classes({0, 9}), classes(())
    assert left_out != with_all
    assert browser.eval(CLASSES.format(view="tv0")) == left_out
    browser.eval("document.getElementById('scaletoggle').click()")
    assert browser.eval(CLASSES.format(view="tv0")) == with_all
    assert browser.problems() == []
