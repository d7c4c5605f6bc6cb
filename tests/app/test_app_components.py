"""The Components view (F8) driven by a Pilot on a tiny random Llama: what it shows equals the library's numbers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from lrp_llm.analyses.components import conditional_relevance
from tests.support.tui_support import CONTEXT, QUESTION, explained, settle, tui_backend, wait_for
from tui.app import XaiApp
from tui.widgets.heatgrid import HeatGrid
from tui.widgets.tokenflow import TokenFlow

# the references below are AttnLRP explanations; the default method has its own test (test_tui_app.py)
PINNED = "attnlrp"

SIZE = (100, 30)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def backend():
    return tui_backend()


@pytest.fixture(scope="module")
def reference(backend):
    """The library's explanation of the test question's answer, with components (AttnLRP, the default)."""
    from lrp_llm.engines.explain import explain

    return explain(
        backend.model, backend.tokenizer, QUESTION, context=CONTEXT, generate=20, method="attnlrp", components=True
    )


async def ask_and_open(app: XaiApp, pilot) -> None:
    app.screen.query_one("#context").insert_text_at_cursor(CONTEXT)
    app.screen.query_one("#question").insert_text_at_cursor(QUESTION)
    await pilot.click("#question")
    await pilot.press("enter")
    await explained(app, pilot)
    await pilot.press("f8")
    await wait_for(
        pilot, lambda: app.current_mode == "components" and app.screen.explained is not None, what="components"
    )
    await settle(app, pilot)


def head_site(screen) -> tuple[int, str]:
    """The list index and name of the first head listed."""
    return next((i, s) for i, (s, _) in enumerate(screen.ranked) if ".attn.head." in s)


@pytest.mark.anyio
async def test_the_view_shows_the_library_numbers(backend, reference):
    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await ask_and_open(app, pilot)
        screen = app.screen
        assert app.progress is None and app.status[1] == "info"
        assert screen.explained.input_ids == reference.input_ids
        await pilot.press("right")  # the answer has the focus: the next answer token
        assert app.target == 1
        want = reference.targets[1].components
        grid = screen.query_one("#cpt-trace", HeatGrid)
        # float32 model: the same computation in the same order; 1e-5 relative covers thread-order differences
        np.testing.assert_allclose(grid.values, want.trace, rtol=1e-5, atol=1e-6)
        assert grid.row_labels == ["emb", "L0", "L1"]
        expected = [(s, v) for kind in ("head", "neuron") for s, v in want.top_components(kind, 8)]
        assert [s for s, _ in screen.ranked] == [s for s, _ in expected]
        np.testing.assert_allclose([v for _, v in screen.ranked], [v for _, v in expected], rtol=1e-5, atol=1e-6)
        listed = screen.query_one("#cpt-list")
        first = str(listed.get_option_at_index(0).prompt)
        assert first == f"{expected[0][1]:+.3f} {expected[0][0]}"
        # the input: the unconditional relevance until a component is chosen
        prompt = screen.query_one("#cpt-prompt", TokenFlow)
        position = reference.targets[1].position
        np.testing.assert_allclose(prompt.values, reference.targets[1].relevance, rtol=1e-5, atol=1e-6)
        assert prompt.target == position
        assert "no corpus index for this model" in str(screen.query_one("#cpt-snippets").render())


@pytest.mark.anyio
async def test_choosing_a_head_shows_its_conditional_heatmap_and_ablation_its_effect(backend, reference):
    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await ask_and_open(app, pilot)
        screen = app.screen
        index, site = head_site(screen)
        listed = screen.query_one("#cpt-list")
        listed.focus()
        listed.highlighted = index
        await pilot.press("enter")
        await settle(app, pilot)
        assert screen.selected == site and app.status[1] == "info"
        t = reference.targets[0]
        ids = reference.input_ids[: t.position + 1]
        want = conditional_relevance(backend.model, ids, t.position, [site], method="attnlrp").heatmaps[0].relevance
        prompt = screen.query_one("#cpt-prompt", TokenFlow)
        np.testing.assert_allclose(prompt.values, want, rtol=1e-5, atol=1e-6)
        assert site in str(prompt.border_title)
        # ablation: the head's slice of o_proj's input zeroed, computed here with a plain hook (not patching)
        await pilot.press("a")
        await settle(app, pilot)
        layer, head = int(site.split(".")[1]), int(site.split(".")[-1])
        width = backend.model.config.head_dim
        attn = backend.model.model.layers[layer].self_attn

        def zero_head(module, args):
            x = args[0].clone()
            x[..., head * width : (head + 1) * width] = 0
            return (x, *args[1:])

        x = torch.tensor([reference.input_ids[: t.position]])
        with torch.no_grad():
            before = backend.model(x).logits[0, -1].double()
            handle = attn.o_proj.register_forward_pre_hook(zero_head)
            try:
                after = backend.model(x).logits[0, -1].double()
            finally:
                handle.remove()
        token = reference.input_ids[t.position]
        text = str(screen.query_one("#cpt-effect").render())
        assert f"logit {float(before[token]):+.2f} → {float(after[token]):+.2f}" in text
        p_old, p_new = float(before.softmax(-1)[token]), float(after.softmax(-1)[token])
        assert f"p {p_old:.3f} → {p_new:.3f}" in text
        assert f"p {p_old:.3f} → {p_new:.3f}" in app.status[0]
        view = screen.view()
        assert view.ablation["new_logit"] == pytest.approx(float(after[token]), rel=1e-5, abs=1e-5)


@pytest.mark.anyio
async def test_escape_cancels_and_the_view_computes_again(backend, reference):
    app = XaiApp(backend, method=PINNED)
    saw_cancel = threading.Event()
    original = backend.reexplain

    def blocking(attribution, method, *, should_cancel=None, progress=None, **kw):
        from lrp_llm.errors import Cancelled

        progress(1, len(attribution.targets))
        for _ in range(1000):
            if should_cancel():
                saw_cancel.set()
                raise Cancelled()
            threading.Event().wait(0.01)
        raise AssertionError("the app never cancelled")

    try:
        async with app.run_test(size=SIZE) as pilot:
            app.screen.query_one("#context").insert_text_at_cursor(CONTEXT)
            app.screen.query_one("#question").insert_text_at_cursor(QUESTION)
            await pilot.click("#question")
            await pilot.press("enter")
            await explained(app, pilot)
            backend.reexplain = blocking
            await pilot.press("f8")
            await wait_for(pilot, lambda: app.progress is not None and app.progress[1] == 1, what="progress")
            assert app.progress[0] == "components"
            await pilot.press("escape")
            await settle(app, pilot)
            assert saw_cancel.is_set()
            assert app.progress is None and app.status == ("cancelled", "info")
            assert app.screen.explained is None
            # a key that needs the components: one line, no job
            await pilot.press("a")
            assert app.status[1] == "error" and "no component chosen" in app.status[0]
            backend.reexplain = original
            await pilot.press("c")
            await wait_for(pilot, lambda: app.screen.explained is not None, what="computed again")
            await settle(app, pilot)
            np.testing.assert_allclose(
                app.screen.query_one("#cpt-trace", HeatGrid).values,
                reference.targets[0].components.trace,
                rtol=1e-5,
                atol=1e-6,
            )
            await pilot.press("f2")  # the other views still work
            assert app.current_mode == "ask"
    finally:
        backend.reexplain = original


@pytest.mark.anyio
async def test_export_html_and_json(tmp_path, backend, reference):
    from lrp_llm.results.attribution import Attribution

    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await ask_and_open(app, pilot)
        index, site = head_site(app.screen)
        app.screen.query_one("#cpt-list").highlighted = index
        app.screen.action_choose(site)
        await settle(app, pilot)
        for fmt in ("json", "html"):
            await pilot.press("ctrl+s")
            app.screen.query_one("#dialog-path").value = str(tmp_path / f"c.{fmt}")
            await pilot.press("enter")
            await settle(app, pilot)
            assert (tmp_path / f"c.{fmt}").is_file(), app.status
        saved = Attribution.load(tmp_path / "c.json")
        np.testing.assert_allclose(
            saved.targets[0].components.trace, reference.targets[0].components.trace, rtol=1e-5, atol=1e-6
        )
        html = (tmp_path / "c.html").read_text()
        assert "id='components'" in html and f"Conditional heatmap of {site}" in html


def opened(*keys: str, after: tuple[str, ...] = (), target: int = 0):
    """run_before of a snapshot: ask, open Components, press ``keys`` on the answer and ``after`` on the
    list of components, wait until all is shown."""

    async def run(pilot) -> None:
        app = pilot.app
        await ask_and_open(app, pilot)
        await pilot.press(*keys)  # on the answer: ←/→ choose the token
        app.screen.query_one("#cpt-list").focus()
        await pilot.press(*after)  # on the list of components
        await settle(app, pilot)
        await wait_for(pilot, lambda: app.target == target and app.progress is None, what="the state asked for")
        assert app.screen.selected is not None
        await pilot.pause()

    return run


def test_components_view_snapshot(snap_compare, backend):
    assert snap_compare(
        XaiApp(backend, method=PINNED), terminal_size=SIZE, run_before=opened("right", after=("enter", "a"), target=1)
    )


def test_components_view_snapshot_80x24(snap_compare, backend):
    assert snap_compare(
        XaiApp(backend, method=PINNED), terminal_size=(80, 24), run_before=opened(after=("down", "enter"))
    )
