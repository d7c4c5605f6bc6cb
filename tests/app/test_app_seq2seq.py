"""The Source & answer view (encoder-decoder models): a tiny T5 in a Pilot, a saved T5 result
opened without a model, SVG snapshots, the HTML report's shares, and the real command in tmux."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from synthetic_tasks import copy_reverse
from tests.support import REPO_ROOT
from tests.support.tiny_t5_vit import tiny_t5
from tests.support.tmux import tmux_pane
from tests.support.tui_support import explained, settle, wait_for
from tui.app import XaiApp

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("one_thread")]

SOURCE = "copy a b c d"
SIZE = (100, 30)


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def t5_backend():
    from tui.backend import ModelBackend

    tok = copy_reverse.make_tokenizer()
    return ModelBackend.from_model(tiny_t5("v1.1", vocab=len(tok)), tok, "tiny-t5")


@pytest.fixture(scope="module")
def t5_result(t5_backend):
    """What the library says for SOURCE (the view must show exactly this)."""
    from lrp_llm.engines.explain import explain

    return explain(t5_backend.model, t5_backend.tokenizer, SOURCE, generate=4)


async def _run_source(app, pilot, text: str = SOURCE) -> None:
    from tui.screens.seq2seq import Seq2SeqScreen

    await wait_for(pilot, lambda: isinstance(app.screen, Seq2SeqScreen), what="the Source & answer view")
    app.screen.query_one("#s2s-source").insert_text_at_cursor(text)
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.attribution is not None or app.status[1] == "error", what="an explanation")
    await explained(app, pilot)


async def test_the_view_shows_both_sides_as_explain_does(t5_backend, t5_result):
    from tui.screens.seq2seq import Seq2SeqScreen
    from tui.widgets.sources import SourcesList
    from tui.widgets.tokenflow import AnswerTokens, TokenFlow

    app = XaiApp(t5_backend, kind="seq2seq", max_new_tokens=4)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, Seq2SeqScreen), what="the Source & answer view")
        screen = app.screen
        assert app.chat is False
        assert not screen.query("#context")  # no QA context field for an encoder-decoder
        await _run_source(app, pilot)
        assert app.status[1] != "error", app.status
        a = app.attribution
        assert a.tokens == t5_result.tokens and a.source_tokens == t5_result.source_tokens
        assert a.source_tokens == ["copy", "a", "b", "c", "d", "</s>"]  # the typed source, as it was encoded
        answer = screen.query_one("#answer", AnswerTokens)
        assert answer.tokens == t5_result.tokens[1:]
        source = screen.query_one("#s2s-source-flow", TokenFlow)
        decoder = screen.query_one("#s2s-decoder-flow", TokenFlow)
        for t in range(len(t5_result.targets)):
            if t:
                await pilot.press("right")
            await wait_for(pilot, lambda t=t: answer.cursor == t and app.target == t, what=f"answer token {t}")
            expected = t5_result.targets[t]
            assert source.tokens == t5_result.source_tokens
            np.testing.assert_allclose(source.values, expected.source_relevance, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(decoder.values, expected.relevance, rtol=1e-4, atol=1e-6)
            assert decoder.target == expected.position
            # one colour scale for both sides: the largest |relevance| of either
            scale = max(np.abs(expected.source_relevance).max(), np.abs(expected.relevance).max())
            assert source.scale == decoder.scale == pytest.approx(scale, rel=1e-5)
            s_abs = np.abs(expected.source_relevance.astype(np.float64)).sum()
            d_abs = np.abs(expected.relevance.astype(np.float64)).sum()
            assert screen.shares == pytest.approx((s_abs / (s_abs + d_abs), d_abs / (s_abs + d_abs)))
            assert sum(screen.shares) == pytest.approx(1.0)
            assert f"{screen.shares[0]:.0%}" in str(source.border_title)
            assert f"{screen.shares[1]:.0%}" in str(decoder.border_title)
            # ranked over both sides: the best is the largest value of either
            sources = screen.query_one("#sources", SourcesList)
            best = max([*expected.source_relevance, *expected.relevance[: expected.position]])
            assert str(sources.get_option_at_index(0).prompt).lstrip().startswith(f"{best:+.3f}"[:6])
        # j marks the top source on its side
        await pilot.press("j")
        top = screen._ranked[0]
        n_src = len(a.source_tokens)
        flow, index = (source, top) if top < n_src else (decoder, top - n_src)
        assert flow.highlight == index


async def test_method_switch_reexplains_the_same_source(t5_backend, t5_result):
    """Ctrl+T re-explains with the next method over the same source and answer (no new generation)."""
    from lrp_llm.engines.explain import explain

    app = XaiApp(t5_backend, kind="seq2seq", max_new_tokens=4)
    async with app.run_test(size=SIZE) as pilot:
        await _run_source(app, pilot)
        first = app.attribution.method
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: app.attribution.method != first and app.progress is None, what="re-explained")
        await settle(app, pilot)
        a = app.attribution
        assert app.status[1] != "error", app.status
        assert a.source_tokens == t5_result.source_tokens and a.tokens == t5_result.tokens
        expected = explain(
            t5_backend.model,
            t5_backend.tokenizer,
            prompt_ids=t5_result.source_ids,
            answer_ids=t5_result.input_ids[1:],
            method=a.method,
        )
        np.testing.assert_allclose(
            a.targets[0].source_relevance, expected.targets[0].source_relevance, rtol=1e-4, atol=1e-6
        )


def test_partial_explanations_carry_the_source(t5_backend, t5_result):
    """ask's on_partial: each partial result is an encoder-decoder's (source tokens, decoder tokens)."""
    from tui.backend import AskRequest

    partials = []
    final = t5_backend.ask(AskRequest(SOURCE, None, False, "attnlrp", 4), on_partial=partials.append)
    assert len(partials) == len(final.targets) == len(t5_result.targets)
    for k, p in enumerate(partials, start=1):
        assert p.source_tokens == final.source_tokens and p.source_ids == final.source_ids
        assert p.tokens == final.tokens and p.prompt_length == final.prompt_length == 1
        assert len(p.targets) == k and p.meta["partial"] is True


def test_a_chat_request_is_refused_for_an_encoder_decoder(t5_backend):
    from lrp_llm.errors import InputError
    from tui.backend import AskRequest

    with pytest.raises(InputError, match="encoder-decoder"):
        t5_backend.ask(AskRequest(SOURCE, None, True, "attnlrp", 2))


async def test_open_a_saved_seq2seq_result(tmp_path, t5_result, monkeypatch):
    """`xai-tui open` of a T5 result opens the Source & answer view, without a model."""
    from tui.cli import main
    from tui.screens.seq2seq import Seq2SeqScreen
    from tui.widgets.tokenflow import TokenFlow

    path = tmp_path / "t5.json"
    t5_result.save(path)
    seen = {}
    monkeypatch.setattr("tui.app.run_app", lambda app: seen.setdefault("app", app) and 0)
    assert main(["open", str(path)]) == 0
    app = seen["app"]
    assert app.backend is None and app.model_kind == "seq2seq"
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.attribution is not None or app.status[1] == "error", what="the result")
        await settle(app, pilot)
        assert app.status[1] != "error", app.status
        screen = app.screen
        assert isinstance(screen, Seq2SeqScreen)
        await pilot.press("right")
        await wait_for(pilot, lambda: app.target == 1, what="the second answer token")
        np.testing.assert_allclose(
            screen.query_one("#s2s-source-flow", TokenFlow).values, t5_result.targets[1].source_relevance, rtol=1e-5
        )
        assert screen.query_one("#s2s-source").disabled  # nothing to run without a model


async def test_a_causal_app_refuses_a_seq2seq_result_in_one_line(tmp_path, t5_result):
    path = tmp_path / "t5.json"
    t5_result.save(path)
    app = XaiApp(None)
    async with app.run_test(size=SIZE) as pilot:
        app.open_result(str(path))
        await settle(app, pilot)
        kind, text = app.status[1], app.status[0]
        assert kind == "error" and "seq2seq" in text and "xai-tui open" in text and "\n" not in text


def test_the_report_shows_both_sides_with_their_shares(t5_result):
    from lrp_llm.export.report import explanation_report

    html = explanation_report(t5_result)
    assert "source share" in html and "decoder share" in html and "source / decoder share" in html
    for t in t5_result.targets:
        source, decoder = t.side_shares()
        assert source + decoder == pytest.approx(1.0)
        assert f"<td class='num'>{source:.0%}</td><td class='num'>{decoder:.0%}</td>" in html
    data = json.loads(json.dumps(t5_result.to_dict()))
    assert data["source_tokens"] == t5_result.source_tokens


# ------------------------------------------------------------------ snapshots
def _ran(*keys: str, target: int):
    async def run(pilot) -> None:
        await _run_source(pilot.app, pilot)
        await pilot.press(*keys)
        await wait_for(pilot, lambda: pilot.app.target == target, what=f"answer token {target}")
        await pilot.pause()

    return run


def test_snapshot_100x30(snap_compare, t5_backend):
    app = XaiApp(t5_backend, kind="seq2seq", max_new_tokens=4)
    assert snap_compare(app, terminal_size=SIZE, run_before=_ran("right", "right", target=2))


def test_snapshot_80x24(snap_compare, t5_backend):
    app = XaiApp(t5_backend, kind="seq2seq", max_new_tokens=4)
    assert snap_compare(app, terminal_size=(80, 24), run_before=_ran("right", target=1))


# ------------------------------------------------------------------ the real command
def test_real_command_in_tmux_on_the_t5_copy_reverse_model():
    """`xai-tui models/synthetic/t5-copy-reverse` in a real terminal: the source view, not the Ask view."""
    command = f"{sys.executable} -m tui models/synthetic/t5-copy-reverse --generate 8"
    with tmux_pane(command, REPO_ROOT, "s2s") as pane:
        shown = pane.wait_until("Source & answer", 30)
        assert "Ask & explain" not in shown and "Context" not in shown
        pane.wait_until("loaded", 120)
        pane.type(SOURCE)
        pane.keys("Enter")
        shown = pane.wait_until("answer tokens explained", 120)
        assert "of |relevance| for" in shown and "Decoder prefix" in shown and "src " in shown
        # the trained model copies the source: the answer is "a b c d </s>", its first token selected
        assert "token 1/5" in shown and "src copy" not in shown.split("Top sources", 1)[0]
        pane.keys("Right")
        pane.wait_until("token 2/", 10)


async def test_word_level_tokens_are_drawn_apart():
    """Tokens without spaces of their own (a word-level vocabulary) get one blank cell between them,
    which belongs to no token."""
    from textual.app import App
    from textual.geometry import Offset

    from tui.screens.seq2seq import spaced
    from tui.widgets.tokenflow import TokenFlow

    assert spaced(["copy", "a", "</s>"]) == 1 and spaced(["▁copy", " a"]) == 0

    class One(App):
        def compose(self):
            yield TokenFlow(id="flow")

    app = One()
    async with app.run_test(size=(30, 5)) as pilot:
        flow = app.query_one(TokenFlow)
        flow.gap = 1
        flow.set_tokens(["copy", "a", "b"])
        await pilot.pause()
        assert flow.render_line(0).text.startswith("copy a b")
        assert [flow.token_at(Offset(x, 0)) for x in range(8)] == [0, 0, 0, 0, None, 1, None, 2]
