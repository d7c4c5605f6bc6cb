"""The Compare view driven by a Pilot on a tiny random Llama: what it shows equals the library's numbers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lrp_llm.analyses.compare import pair_scores
from lrp_llm.methods import label
from tests.support.tui_support import CONTEXT, QUESTION, explained, settle, tui_backend, wait_for
from tui.app import XaiApp
from tui.widgets.tokenflow import TokenFlow

# the references below are AttnLRP explanations; the default method has its own test (test_tui_app.py)
PINNED = "attnlrp"

SIZE = (100, 30)
METHODS = ("attnlrp", "cp-lrp", "integrated-gradients")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def backend():
    return tui_backend()


@pytest.fixture(scope="module")
def references(backend):
    """The library's explanation of the test question's answer with each default method."""
    from lrp_llm.engines.explain import explain

    first = explain(backend.model, backend.tokenizer, QUESTION, context=CONTEXT, generate=20, method="attnlrp")
    n = first.prompt_length
    out = {"attnlrp": first}
    for m in METHODS[1:]:
        out[m] = explain(
            backend.model,
            backend.tokenizer,
            prompt_ids=first.input_ids[:n],
            answer_ids=first.input_ids[n:],
            method=m,
        )
    return out


async def ask_and_compare(app: XaiApp, pilot) -> None:
    app.screen.query_one("#context").insert_text_at_cursor(CONTEXT)
    app.screen.query_one("#question").insert_text_at_cursor(QUESTION)
    await pilot.click("#question")
    await pilot.press("enter")
    await explained(app, pilot)
    await pilot.press("f6")
    await wait_for(pilot, lambda: app.current_mode == "compare" and not app.screen.missing(), what="methods computed")
    await settle(app, pilot)


def scores_text(app: XaiApp) -> str:
    return str(app.screen.query_one("#cmp-scores").render())


@pytest.mark.anyio
async def test_compare_view_shows_the_library_numbers(backend, references):
    from lrp_llm.analyses.evaluate import perturbation_curves

    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await ask_and_compare(app, pilot)
        screen = app.screen
        assert screen.selected == list(METHODS)
        assert app.progress is None and app.status[1] == "info"
        await pilot.press("right", "right")
        assert app.target == 2
        t = 2
        ref = {m: references[m].targets[t] for m in METHODS}
        for i, m in enumerate(METHODS):  # each panel: the prompt coloured by that method's relevance
            panel = screen.query_one(f"#cmp-p{i}", TokenFlow)
            assert panel.border_title == label(m)
            assert panel.target == ref[m].position
            np.testing.assert_allclose(panel.values[: ref[m].position], ref[m].relevance, rtol=1e-4, atol=1e-6)
        expected = pair_scores({m: ref[m].relevance for m in METHODS})
        assert [(p.a, p.b) for p in screen.pairs] == [(p.a, p.b) for p in expected]
        for shown, want in zip(screen.pairs, expected):
            assert shown.spearman == pytest.approx(want.spearman, abs=1e-6)
            assert shown.overlap == want.overlap
        text = scores_text(app)
        for want in expected:
            assert f"{want.spearman:+.3f}" in text and f"{round(want.overlap * 5)}/5" in text
        # faithfulness on demand: the evaluation's curves of this one token, per method
        await pilot.press("f")
        await settle(app, pilot)
        curves = screen.curves()
        assert list(curves) == list(METHODS)
        special = set(backend.tokenizer.all_special_ids)
        ids = references["attnlrp"].input_ids
        position = ref["attnlrp"].position
        candidates = [i for i in range(position) if ids[i] not in special]
        text = scores_text(app)
        for m in METHODS:
            want = perturbation_curves(backend.model, ids, position, ref[m].relevance, candidates=candidates, steps=20)
            np.testing.assert_allclose(curves[m].morf_logit, want.morf_logit, rtol=1e-4, atol=1e-4)
            assert curves[m].abpc == pytest.approx(want.abpc, abs=1e-3)
            assert f"ABPC {curves[m].abpc:+.3f}" in text
        assert "faithfulness measured" in app.status[0]
        # another token: its own numbers, its curves not measured yet
        await pilot.press("left")
        assert screen.curves() == {} and "f: faithfulness" in scores_text(app)


@pytest.mark.anyio
async def test_methods_are_cached_per_answer_and_toggled(backend, references):
    app = XaiApp(backend, method=PINNED)
    calls: list[str] = []
    original = backend.reexplain

    def counting(attribution, method, **kw):
        calls.append(method)
        return original(attribution, method, **kw)

    backend.reexplain = counting
    try:
        async with app.run_test(size=SIZE) as pilot:
            await ask_and_compare(app, pilot)
            screen = app.screen
            # the Ask view's own AttnLRP answer is reused; the other two computed once
            assert calls == ["cp-lrp", "integrated-gradients"]
            saliency = app.available_methods.index("saliency") + 1
            cp = str(app.available_methods.index("cp-lrp") + 1)  # each method's number key
            await pilot.press(str(saliency))  # a fourth: refused with a message
            assert app.status[1] == "error" and "at most 3" in app.status[0]
            await pilot.press(cp)  # remove CP-LRP
            assert screen.selected == ["attnlrp", "integrated-gradients"]
            assert not screen.query_one("#cmp-p2").display
            await pilot.press(str(saliency), cp)
            await wait_for(pilot, lambda: not screen.missing(), what="saliency computed")
            await settle(app, pilot)
            assert screen.selected == ["attnlrp", "integrated-gradients", "saliency"]
            await pilot.press(cp)  # back: CP-LRP comes from the cache
            assert calls == ["cp-lrp", "integrated-gradients", "saliency"]
            await pilot.press("f2", "f6")
            await settle(app, pilot)
            assert calls == ["cp-lrp", "integrated-gradients", "saliency"]
    finally:
        backend.reexplain = original


@pytest.mark.anyio
async def test_a_method_chosen_while_computing_is_computed_next(backend):
    app = XaiApp(backend, method=PINNED)
    calls: list[str] = []
    release = threading.Event()
    original = backend.reexplain

    def gated(attribution, method, **kw):
        calls.append(method)
        release.wait(60)  # the first job stays running until the test has chosen another method
        return original(attribution, method, **kw)

    backend.reexplain = gated
    try:
        async with app.run_test(size=SIZE) as pilot:
            app.screen.query_one("#question").insert_text_at_cursor(QUESTION)
            await pilot.click("#question")
            await pilot.press("enter")
            await settle(app, pilot)
            await pilot.press("f6")
            await wait_for(pilot, lambda: bool(calls), what="the first job")
            screen = app.screen
            assert screen.busy()
            saliency = app.available_methods.index("saliency") + 1
            cp = str(app.available_methods.index("cp-lrp") + 1)
            await pilot.press(cp, str(saliency))  # while CP-LRP is computed: queued, nothing cancelled
            assert screen.selected == ["attnlrp", "integrated-gradients", "saliency"]
            assert calls == ["cp-lrp"]
            release.set()
            await wait_for(pilot, lambda: not screen.missing() and not screen.busy(), what="all computed")
            await settle(app, pilot)
            assert calls == ["cp-lrp", "integrated-gradients", "saliency"]
            assert app.progress is None and app.status[1] == "info" and "compared" in app.status[0]
    finally:
        release.set()
        backend.reexplain = original


@pytest.mark.anyio
async def test_escape_cancels_the_comparison(backend):
    app = XaiApp(backend, method=PINNED)
    started = threading.Event()
    saw_cancel = threading.Event()
    original = backend.reexplain

    def blocking(attribution, method, *, should_cancel=None, progress=None, **kw):
        from lrp_llm.errors import Cancelled

        progress(1, len(attribution.targets))
        started.set()
        for _ in range(1000):
            if should_cancel():
                saw_cancel.set()
                raise Cancelled()
            threading.Event().wait(0.01)
        raise AssertionError("the app never cancelled")

    try:
        async with app.run_test(size=SIZE) as pilot:
            app.screen.query_one("#question").insert_text_at_cursor(QUESTION)
            await pilot.click("#question")
            await pilot.press("enter")
            await settle(app, pilot)
            backend.reexplain = blocking
            await pilot.press("f6")
            await wait_for(pilot, lambda: app.progress is not None and app.progress[1] == 1, what="progress")
            assert app.progress[0] == "explaining with CP-LRP"
            bar = app.screen.query_one("#progress")
            assert bar.progress == 1
            await pilot.press("escape")
            await settle(app, pilot)
            assert saw_cancel.is_set()
            assert app.progress is None and app.status == ("cancelled", "info")
            assert app.screen.missing() == ["cp-lrp", "integrated-gradients"]
            assert app.screen.pairs == []
            # `f` before the methods are there: one line, no job
            await pilot.press("f")
            assert app.status[1] == "error" and "still being computed" in app.status[0]
    finally:
        backend.reexplain = original


@pytest.mark.anyio
async def test_export_json_and_html(tmp_path, backend, references):
    from lrp_llm.results.comparison import MethodComparison

    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await ask_and_compare(app, pilot)
        await pilot.press("right", "f")
        await settle(app, pilot)
        for fmt in ("json", "html"):
            await pilot.press("ctrl+s")
            app.screen.query_one("#dialog-path").value = str(tmp_path / f"cmp.{fmt}")
            await pilot.press("enter")
            await settle(app, pilot)
            assert (tmp_path / f"cmp.{fmt}").is_file(), app.status
        saved = MethodComparison.load(tmp_path / "cmp.json")
        assert saved.methods == list(METHODS) and saved.target == 1
        np.testing.assert_allclose(saved.relevance_of("cp-lrp"), references["cp-lrp"].targets[1].relevance, rtol=1e-4)
        assert set(saved.curves) == set(METHODS)
        html = (tmp_path / "cmp.html").read_text()
        assert html.startswith("<!DOCTYPE html>") and f"{saved.pairs[0].spearman:.3f}" in html


@pytest.mark.anyio
async def test_without_a_model_the_view_says_what_it_needs(tmp_path, references):
    path = tmp_path / "result.json"
    references["attnlrp"].save(path)
    app = XaiApp(None, result_path=str(path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("f6")
        await pilot.pause()
        assert "needs the model" in scores_text(app)
        await pilot.press("f")
        assert app.status[1] == "error"


def _panels_show_the_target(app: XaiApp) -> bool:
    """Every method panel has scrolled (after its refresh) so that the explained token is in view."""
    from tui.widgets.tokenflow import TokenFlow

    position = app.attribution.targets[app.target].position
    for panel in app.screen.query(TokenFlow):
        if not (panel.id or "").startswith("cmp-p") or not panel.display or panel.line_of(position) is None:
            continue
        top, height = panel.scroll_offset.y, panel.scrollable_content_region.height
        if not top <= panel.line_of(position) < top + height:
            return False
    return True


def compared(*keys: str):
    """run_before of a snapshot: ask, switch to Compare, wait for the methods, then press ``keys``."""

    async def run(pilot) -> None:
        await ask_and_compare(pilot.app, pilot)
        await pilot.press(*keys)
        await settle(pilot.app, pilot)
        await wait_for(pilot, lambda: pilot.app.target == keys.count("right"), what="the answer token asked for")
        await wait_for(pilot, lambda: _panels_show_the_target(pilot.app), what="each panel scrolled to the token")
        await pilot.pause()

    return run


def test_compare_view_snapshot(snap_compare, backend):
    assert snap_compare(XaiApp(backend, method=PINNED), terminal_size=SIZE, run_before=compared("right", "f"))


def test_compare_view_snapshot_80x24(snap_compare, backend):
    assert snap_compare(
        XaiApp(backend, method=PINNED), terminal_size=(80, 24), run_before=compared("right", "right", "f")
    )


def test_open_names_a_saved_comparison_in_one_line(tmp_path):
    from lrp_llm.errors import InputError
    from lrp_llm.results.comparison import MethodComparison
    from tui.commands.open import load_result

    c = MethodComparison("tiny", ["<s>", "a", "b"], [1, 5, 6], 2, 0, 2, ["attnlrp", "cp-lrp"], [[0.0, 1.0], [1.0, 0.0]])
    c.save(tmp_path / "c.json")
    with pytest.raises(InputError, match="a method comparison; its HTML export shows it"):
        load_result(str(tmp_path / "c.json"))
