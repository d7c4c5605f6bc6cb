"""The app driven by a Pilot on a tiny random Llama: what it shows equals the library's result."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.support.tui_support import CONTEXT, QUESTION, settle, tui_backend, wait_for
from tui.app import XaiApp
from tui.backend import AskRequest, LoadOptions, ModelBackend
from tui.rows import relevance_row
from tui.widgets.sources import SourcesList
from tui.widgets.tokenflow import AnswerTokens, TokenFlow

# the references below are AttnLRP explanations; the default method has its own test (test_tui_app.py)
PINNED = "attnlrp"

SIZE = (100, 30)
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def backend():
    return tui_backend()


@pytest.fixture(scope="module")
def reference(backend):
    """The library's own explanation of the question the tests ask."""
    from lrp_llm.engines.explain import explain

    return explain(backend.model, backend.tokenizer, QUESTION, context=CONTEXT, generate=20, method="attnlrp")


async def ask(app: XaiApp, pilot, question: str = QUESTION, context: str = CONTEXT, *, typed: bool = False) -> None:
    """Paste the context, type (or paste) the question, press Enter; wait for the workers."""
    app.screen.query_one("#context").insert_text_at_cursor(context)
    await pilot.click("#question")
    if typed:
        await pilot.press(*question)
    else:
        app.screen.query_one("#question").insert_text_at_cursor(question)
    await pilot.press("enter")
    await settle(app, pilot)
    await wait_for(
        pilot,
        lambda: app.attribution is None or (not app.attribution.meta.get("partial") and app.progress is None),
        what="the whole answer explained",
    )


async def test_ask_streams_answer_and_shows_the_library_relevance(backend, reference):
    app = XaiApp(backend, method=PINNED)
    streamed: list[int] = []
    async with app.run_test(size=SIZE) as pilot:
        app.watch(app, "stream_answer", lambda tokens: streamed.append(len(tokens)), init=False)
        await ask(app, pilot, typed=True)
        a = app.attribution
        assert a is not None and a.answer == reference.answer
        assert a.input_ids == reference.input_ids
        # the answer arrived token by token before it was explained
        n = len(reference.targets)
        assert [k for k in streamed if k] == list(range(1, n + 1))
        answer = app.screen.query_one("#answer", AnswerTokens)
        assert answer.tokens == reference.tokens[reference.prompt_length :]
        assert app.focused is answer and answer.cursor == 0

        await pilot.press("right", "right", "right", "left")
        assert app.target == 2 and answer.cursor == 2
        prompt = app.screen.query_one("#prompt", TokenFlow)
        expected = reference.targets[2]
        np.testing.assert_allclose(prompt.values, expected.relevance, rtol=1e-5, atol=1e-6)
        assert prompt.target == expected.position
        assert prompt.scale == pytest.approx(float(np.abs(expected.relevance).max()), rel=1e-5)
        subtitle = str(answer.border_subtitle)
        assert f"logit {expected.logit:.2f}" in subtitle and f"p {expected.probability:.3f}" in subtitle
        assert f"ΣR/logit {expected.conservation:.2f}" in subtitle
        # ranked sources: the largest positive relevance first
        sources = app.screen.query_one("#sources", SourcesList)
        first = sources.get_option_at_index(0)
        assert int(first.id) == int(np.argmax(expected.relevance))


async def test_mouse_over_the_answer_selects_a_token(backend, reference):
    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await ask(app, pilot)
        answer = app.screen.query_one("#answer", AnswerTokens)
        line = answer.line_of(4)
        piece = next(p for p in answer._lines[line] if p.index == 4)
        # content starts after the border (1) and the padding (1) on the left, the border on top
        await pilot.hover("#answer", offset=(piece.x + 2, line + 1))
        assert app.target == 4
        await pilot.click("#answer", offset=(2, 1))
        assert app.target == 0
        np.testing.assert_allclose(
            app.screen.query_one("#prompt", TokenFlow).values, reference.targets[0].relevance, rtol=1e-5, atol=1e-6
        )


async def test_method_switch_recomputes_in_a_worker(backend, reference):
    from lrp_llm.engines.explain import explain

    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await ask(app, pilot)
        await pilot.press("right")
        await pilot.press("ctrl+t")  # next method: CP-LRP
        await settle(app, pilot)
        assert app.method == "cp-lrp" and app.attribution.method == "cp-lrp"
        assert app.attribution.input_ids == reference.input_ids  # same answer, not regenerated
        n = reference.prompt_length
        expected = explain(
            backend.model,
            backend.tokenizer,
            prompt_ids=reference.input_ids[:n],
            answer_ids=reference.input_ids[n:],
            method="cp-lrp",
        )
        np.testing.assert_allclose(
            app.screen.query_one("#prompt", TokenFlow).values,
            expected.targets[app.target].relevance,
            rtol=1e-5,
            atol=1e-6,
        )
        assert app.screen.query_one("#method").value == "cp-lrp"


async def test_word_level_merges_subwords_and_keeps_the_total(backend, reference):
    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await ask(app, pilot)
        await pilot.press("right", "ctrl+g")
        assert app.word_level
        prompt = app.screen.query_one("#prompt", TokenFlow)
        row = relevance_row(reference, 1, words=True)
        assert prompt.tokens == row.texts
        assert len(row.texts) < len(reference.tokens)
        assert sum(prompt.values) == pytest.approx(float(reference.targets[1].relevance.sum()), rel=1e-4, abs=1e-5)
        assert "words" in str(prompt.border_title)
        await pilot.press("ctrl+g")
        assert prompt.tokens == reference.tokens


async def test_jump_walks_through_the_top_sources(backend, reference):
    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=(80, 24)) as pilot:
        await ask(app, pilot)
        order = np.argsort(-reference.targets[0].relevance, kind="stable")
        await pilot.press("j")
        prompt = app.screen.query_one("#prompt", TokenFlow)
        assert prompt.highlight == int(order[0])
        await pilot.press("j")
        assert prompt.highlight == int(order[1])
        # Enter on a source in the list jumps there too
        sources = app.screen.query_one("#sources", SourcesList)
        sources.focus()
        sources.highlighted = 2
        await pilot.press("enter")
        assert prompt.highlight == int(sources.get_option_at_index(2).id)
        top, height = prompt.scroll_offset.y, prompt.scrollable_content_region.height
        assert top <= prompt.line_of(prompt.highlight) < top + height


async def test_empty_question_shows_an_error_and_the_app_stays_usable(backend):
    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#question")
        await pilot.press("enter")
        await pilot.pause()
        text, kind = app.status
        assert kind == "error" and "empty" in text
        assert app.attribution is None
        await ask(app, pilot, context="")
        assert app.attribution is not None and app.status[1] == "info"


async def test_bad_checkpoint_shows_a_message_in_the_app(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')  # no weights
    app = XaiApp(ModelBackend(LoadOptions(path=str(tmp_path))))
    async with app.run_test(size=SIZE) as pilot:
        # the load worker starts after the first frame and fails
        await wait_for(pilot, lambda: app.model_state == "failed", what="the failed load")
        assert app.model_state == "failed"
        text, kind = app.status
        assert kind == "error" and "no weights" in text
        await pilot.click("#question")
        await pilot.press(*"hello", "enter")
        await pilot.pause()
        assert app.status[1] == "error" and "did not load" in app.status[0]
        await pilot.press("f1")
        assert type(app.screen).__name__ == "HelpScreen"


class BlockingBackend(ModelBackend):
    """Reports progress, then waits until the app cancels (a seam for the cancel test)."""

    def __init__(self) -> None:
        super().__init__(name="blocking")
        self.model = object()
        self.saw_cancel = threading.Event()

    def ask(self, request, *, on_prompt=None, on_token=None, on_partial=None, progress=None, should_cancel=None):
        from lrp_llm.errors import Cancelled

        on_prompt(["<s>", "hello"])
        on_token(" there")
        progress(1, 5)
        for _ in range(1000):
            if should_cancel():
                self.saw_cancel.set()
                raise Cancelled()
            threading.Event().wait(0.01)
        raise AssertionError("the app never cancelled")


async def test_escape_cancels_the_running_job():
    backend = BlockingBackend()
    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        app.ask(AskRequest("hello"))
        for _ in range(200):
            await pilot.pause(0.01)
            if app.progress == ("explaining", 1, 5):
                break
        assert app.progress == ("explaining", 1, 5)
        bar = app.screen.query_one("#progress")
        assert (bar.progress, bar.total) == (1, 5)
        assert app.stream_answer == (" there",)
        await pilot.press("escape")
        await settle(app, pilot)
        assert backend.saw_cancel.is_set()
        assert app.progress is None and app.status == ("cancelled", "info")
        assert app.attribution is None


async def test_open_json_shows_a_saved_result_without_a_model(tmp_path, reference):
    path = tmp_path / "result.json"
    reference.save(path)
    app = XaiApp(None, result_path=str(path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        a = app.attribution
        assert a.tokens == reference.tokens and a.method == reference.method
        assert app.screen.query_one("#question").disabled
        await pilot.press("right")
        np.testing.assert_allclose(
            app.screen.query_one("#prompt", TokenFlow).values, reference.targets[1].relevance, rtol=1e-6
        )
        app.set_method("cp-lrp")
        assert app.status[1] == "error" and "needs the model" in app.status[0]


async def test_bad_json_shows_a_message(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    app = XaiApp(None, result_path=str(path))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.status[1] == "error", what="the error message")
        assert "is not an xai-tui result" in app.status[0]


@pytest.mark.parametrize("fmt", ["html", "json"])
async def test_export_writes_html_and_json(tmp_path, backend, reference, fmt):
    from lrp_llm.results.attribution import Attribution

    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await ask(app, pilot)
        await pilot.press("ctrl+s")
        dialog = app.screen
        assert type(dialog).__name__ == "PathDialog"
        field = dialog.query_one("#dialog-path")
        field.value = str(tmp_path / f"out.{fmt}")
        await pilot.press("enter")
        await settle(app, pilot)
        out = tmp_path / f"out.{fmt}"
        assert out.is_file(), app.status
        if fmt == "json":
            saved = Attribution.load(out)
            assert saved.tokens == reference.tokens
            np.testing.assert_allclose(saved.targets[3].relevance, reference.targets[3].relevance, rtol=1e-5)
        else:
            text = out.read_text()
            assert text.startswith("<!DOCTYPE html>") and "Normandy" in text
        assert app.status[0].startswith("wrote")
        # a folder that does not exist: a message, no file, no crash
        await pilot.press("ctrl+s")
        app.screen.query_one("#dialog-path").value = str(tmp_path / "missing" / f"x.{fmt}")
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.status[1] == "error" and "does not exist" in app.status[0]


async def test_long_range_view_bins_the_selected_token(backend, reference):
    from lrp_llm.analyses.longrange import relevance_by_distance, share_beyond
    from tui.widgets.histogram import DistanceHistogram

    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await ask(app, pilot)
        await pilot.press("right", "right")
        await pilot.press("f3")
        await pilot.pause()
        assert app.current_mode == "longrange"
        screen = app.screen
        profile = screen.query_one(DistanceHistogram).profile
        expected = relevance_by_distance(reference.targets[2].relevance)
        np.testing.assert_allclose(profile.signed, expected.signed, rtol=1e-5, atol=1e-6)
        share = share_beyond(reference.targets[2].relevance, 32)
        assert f"{100 * share:.1f}% of |relevance| lies more than 32" in str(screen.query_one("#far-share").render())
        # the shared cursor: moving here changes the selection of the main view too
        await pilot.press("right")
        assert app.target == 3
        await pilot.press("minus", "minus", "minus")  # far = 4
        assert screen.far == 4
        await pilot.press("j")
        prompt = screen.query_one("#lr-prompt", TokenFlow)
        r = reference.targets[3].relevance
        p = reference.targets[3].position
        far = [j for j in range(p) if p - j > 4]
        assert prompt.highlight == max(far, key=lambda j: (abs(r[j]), -j))
        await pilot.press("f2")
        assert app.current_mode == "ask" and app.screen.query_one("#answer", AnswerTokens).cursor == 3


async def test_help_lists_every_binding_with_an_id_and_a_description(backend):
    from textual.widgets import DataTable

    from tui.screens.help import HelpScreen, own_bindings

    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        sections = app.help_sections()
        bindings = [b for _, cls in sections for b in own_bindings(cls)]
        assert all(b.id and b.description for b in bindings)
        shown = [b for b in bindings if not HelpScreen.hidden(b)]
        assert app.screen.query_one(DataTable).row_count == len(shown)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_command_palette_offers_the_actions_of_the_view(backend):
    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await ask(app, pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Export HTML", "Export JSON", "Help", "View: Long range", "Method: CP-LRP", "Jump to top source"):
            assert title in titles
        assert any(t.startswith("Word level") for t in titles)
        command = next(c for c in app.get_system_commands(app.screen) if c.title.startswith("Word level"))
        command.callback()
        assert app.word_level
        await pilot.press("f3")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Far threshold: nearer" in titles and "Method: CP-LRP" not in titles


async def test_small_terminal_and_resize(backend):
    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=(80, 24)) as pilot:
        await ask(app, pilot)
        prompt = app.screen.query_one("#prompt", TokenFlow)
        lines_wide = len(prompt._lines)
        await pilot.resize_terminal(60, 20)
        await pilot.pause()
        assert len(prompt._lines) > lines_wide  # re-wrapped to the narrower width
        widths = [sum(p.width for p in line) for line in prompt._lines]
        assert max(widths) <= prompt.scrollable_content_region.width


@pytest.fixture(scope="module")
def encoder():
    from tests.support.tui_support import tui_encoder

    return tui_encoder()


SENTENCE_A, SENTENCE_B = "the cat sat on the mat", "a kitten sleeps on the rug"


async def compare(app: XaiApp, pilot) -> None:
    await pilot.press("f4")
    screen = app.screen
    screen.query_one("#sim-a").insert_text_at_cursor(SENTENCE_A)
    screen.query_one("#sim-b").focus()
    screen.query_one("#sim-b").insert_text_at_cursor(SENTENCE_B)
    await pilot.press("enter")
    await settle(app, pilot)


async def test_similarity_view_shows_the_bilrp_matrix_and_partners(backend, encoder):
    from lrp_llm.analyses.bilrp import SimilarityExplainer
    from tui.widgets.heatgrid import HeatGrid

    expected = SimilarityExplainer(encoder.model, encoder.tokenizer).explain(SENTENCE_A, SENTENCE_B)
    app = XaiApp(backend, method=PINNED, encoder=encoder)
    async with app.run_test(size=SIZE) as pilot:
        await compare(app, pilot)
        assert app.current_mode == "similarity"
        e = app.similarity
        assert e.similarity == pytest.approx(expected.similarity, rel=1e-5)
        grid = app.screen.query_one("#sim-grid", HeatGrid)
        np.testing.assert_allclose(grid.values, expected.interactions, rtol=1e-5, atol=1e-7)
        i, j, _ = expected.top_pairs(1)[0]
        assert grid.cursor == (i, j) and app.focused is grid
        flow_b = app.screen.query_one("#sim-tokens-b", TokenFlow)
        np.testing.assert_allclose(flow_b.values, expected.interactions[i], rtol=1e-5, atol=1e-7)
        # arrows move the cell; a click on a token of A picks its row
        await pilot.press("down")
        assert grid.cursor == (min(i + 1, grid.values.shape[0] - 1), j)
        flow_a = app.screen.query_one("#sim-tokens-a", TokenFlow)
        piece = flow_a._lines[0][1]  # the first word after [CLS]
        await pilot.click("#sim-tokens-a", offset=(piece.x + 2, 1))
        assert grid.cursor[0] == piece.index
        np.testing.assert_allclose(flow_b.values, expected.interactions[piece.index], rtol=1e-5, atol=1e-7)
        await pilot.press("j")
        assert grid.cursor == (i, j)
        assert "cosine" in str(app.screen.query_one("#sim-summary").render())


async def test_patching_view_runs_a_sweep_next_to_relp(backend, tmp_path):
    from patching.experiment import run_patching
    from tui.widgets.heatgrid import HeatGrid

    clean, corrupted, answer, wrong = "The capital of France is", "The capital of Italy is", " Paris", " Italy"
    expected = run_patching(backend.model, backend.tokenizer, clean, corrupted, answer, wrong, sites=("resid",))
    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("f5")
        screen = app.screen
        for field, text in (("clean", clean), ("corrupted", corrupted), ("answer", answer), ("wrong", wrong)):
            screen.query_one(f"#patch-{field}").insert_text_at_cursor(text)
        screen.query_one("#patch-wrong").focus()
        await pilot.press("enter")
        await settle(app, pilot)
        sweep = screen.query_one("#patch-sweep", HeatGrid)
        relp = screen.query_one("#patch-relp", HeatGrid)
        np.testing.assert_allclose(
            sweep.values, expected.grid("resid", method="sweep").values, rtol=1e-4, atol=1e-5, equal_nan=True
        )
        np.testing.assert_allclose(
            relp.values, expected.grid("resid", method="relp").values, rtol=1e-4, atol=1e-5, equal_nan=True
        )
        await pilot.press("up", "left")
        assert relp.cursor == sweep.cursor
        r, c = sweep.cursor
        caption = str(screen.query_one("#patch-cell").render())
        logit_diff = expected.grid("resid", method="sweep", metric="logit_diff").values[r, c]
        assert f"patched logit diff: sweep {logit_diff:+.3f}" in caption
        # the result exports as JSON and reopens in the patching view without a model
        await pilot.press("ctrl+s")
        app.screen.query_one("#dialog-path").value = str(tmp_path / "patch.json")
        await pilot.press("enter")
        await settle(app, pilot)
    reopened = XaiApp(None, result_path=str(tmp_path / "patch.json"))
    async with reopened.run_test(size=SIZE) as pilot:
        await settle(reopened, pilot)
        assert reopened.current_mode == "patching"
        np.testing.assert_allclose(
            reopened.screen.query_one("#patch-sweep", HeatGrid).values, sweep.values, rtol=1e-6, equal_nan=True
        )


async def test_patching_errors_are_shown(backend):
    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("f5")
        screen = app.screen
        for field, text in (("clean", "The capital of France is"), ("corrupted", "Paris is in the north of")):
            screen.query_one(f"#patch-{field}").insert_text_at_cursor(text)
        screen.query_one("#patch-answer").insert_text_at_cursor(" Paris")
        screen.query_one("#patch-answer").focus()
        await pilot.press("enter")
        assert app.status[1] == "error" and "wrong field is empty" in app.status[0]
        screen.query_one("#patch-wrong").insert_text_at_cursor(" Italy")
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.status[1] == "error" and "same number of tokens" in app.status[0]


class LateBackend(ModelBackend):
    """Hands over a tiny model only when the app loads it, as a checkpoint on disk would be."""

    def __init__(self, model, tokenizer) -> None:
        super().__init__(name="late")
        self._parts = (model, tokenizer)

    def load(self) -> str:
        self.model, self.tokenizer = self._parts
        return "tiny"


async def test_question_from_the_command_line_is_asked_once_loaded(reference):
    from lrp_llm.engines.explain import explain

    loaded = tui_backend()
    model, tokenizer = loaded.model, loaded.tokenizer
    backend = LateBackend(model, tokenizer)  # not loaded yet: the question waits for the model
    app = XaiApp(backend, method=PINNED, question=QUESTION, context=CONTEXT, max_new_tokens=3)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await settle(app, pilot)
            if app.attribution is not None:
                break
        assert app.model_state == "ready"
        expected = explain(model, tokenizer, QUESTION, context=CONTEXT, generate=3)
        assert app.attribution.tokens == expected.tokens and len(app.attribution.targets) == 3
        assert app.screen.query_one("#question").value == QUESTION


async def test_the_first_heatmap_shows_before_the_last_token_is_explained(reference):
    """The worker is held after the first answer token is explained: its heatmap is on screen, the
    user moves over the explained tokens only, export waits; then the rest arrive and the
    selection stays where the user left it."""
    backend = tui_backend()
    release, held = threading.Event(), threading.Event()
    partials = backend._partials

    def holding(on_partial, *args):
        on_target = partials(on_partial, *args)

        def hold(index, target):
            on_target(index, target)
            if index == 1:  # two tokens explained: the worker waits for the test
                held.set()
                assert release.wait(120), "the test did not release the worker"

        return hold

    backend._partials = holding
    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        app.screen.query_one("#context").insert_text_at_cursor(CONTEXT)
        app.screen.query_one("#question").insert_text_at_cursor(QUESTION)
        await pilot.click("#question")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: app.attribution is not None and len(app.attribution.targets) == 2, what="a partial result"
        )
        a = app.attribution
        n = len(reference.targets)
        assert a.meta["partial"] and a.meta["answer_tokens"] == n > 2 and held.is_set()
        assert app.stream_prompt is None and "2/" in app.status[0]
        prompt = app.screen.query_one("#prompt", TokenFlow)
        np.testing.assert_allclose(prompt.values, reference.targets[0].relevance, rtol=1e-5, atol=1e-6)
        answer = app.screen.query_one("#answer", AnswerTokens)
        assert answer.tokens == reference.tokens[reference.prompt_length :]  # the whole answer is shown
        await pilot.press("right", "right", "right")  # only the explained tokens can be selected
        assert answer.cursor == 1
        np.testing.assert_allclose(prompt.values, reference.targets[1].relevance, rtol=1e-5, atol=1e-6)
        await pilot.press("ctrl+s")
        assert app.status[1] == "error" and "still being explained" in app.status[0]
        release.set()
        await settle(app, pilot)
        await wait_for(pilot, lambda: not app.attribution.meta.get("partial"), what="the whole explanation")
        assert len(app.attribution.targets) == n and answer.cursor == 1
        for got, expected in zip(app.attribution.targets, reference.targets):
            np.testing.assert_allclose(got.relevance, expected.relevance, rtol=1e-5, atol=1e-6)


async def test_the_colour_scale_leaves_template_tokens_out_until_toggled(backend, reference):
    from lrp_llm.export.levels import display_scale
    from tui.widgets.legend import Legend

    app = XaiApp(backend, method=PINNED)
    async with app.run_test(size=SIZE) as pilot:
        await ask(app, pilot)
        template = set(app.attribution.meta["template_positions"])
        await pilot.press("right")  # answer token 1: a template token holds its largest |relevance|
        t = reference.targets[1]
        assert template and all(k < t.position for k in template if k < reference.prompt_length)
        prompt = app.screen.query_one("#prompt", TokenFlow)
        values = list(t.relevance)
        assert display_scale(values, template) < display_scale(values)  # the case the toggle is for
        assert prompt.scale == pytest.approx(display_scale(values, template), rel=1e-6)
        assert prompt.values[: len(values)] == pytest.approx(values, rel=1e-6)  # every value still shown
        assert "left out" in app.screen.query_one(Legend).unit
        sources = app.screen.query_one("#sources", SourcesList)
        listed = [sources.get_option_at_index(i) for i in range(sources.option_count)]
        heading = next(i for i, o in enumerate(listed) if "special / template" in str(o.prompt))
        ranked = [int(o.id) for o in listed[:heading] if o.id is not None]
        assert not template & set(ranked)  # the ranked sources leave them out; they are listed below
        assert {int(o.id) for o in listed[heading + 1 :]} <= template
        await pilot.press("ctrl+e")
        assert app.scale_all and prompt.scale == pytest.approx(display_scale(values), rel=1e-6)
        assert "left out" not in app.screen.query_one(Legend).unit


async def test_without_a_method_the_app_takes_the_family_default():
    """No --method: the loaded model's family default (chosen by measurement), also for a backend loaded
    before the app starts; an asked method stays."""
    from lrp_llm.methods import default_method

    backend = tui_backend()
    app = XaiApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready")
        assert app.method == default_method(backend.model) == "attnlrp-qk-late"
        assert app.available_methods[0] == app.method
    asked = XaiApp(backend, method="cp-lrp")
    async with asked.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: asked.model_state == "ready")
        assert asked.method == "cp-lrp"
