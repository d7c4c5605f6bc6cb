"""The History view and saved sessions, driven by a Pilot on a tiny random Llama: every complete
explanation of a session is listed, choosing one shows it again without recomputing, and a saved
session reopens with `xai-tui open` without the model."""

from __future__ import annotations

import numpy as np
import pytest

from lrp_llm.results.session import Session, SessionEntry
from tests.support.result_files import causal, seq2seq
from tests.support.tui_support import CONTEXT, QUESTION, explained, settle, tui_backend, wait_for
from tui.app import XaiApp
from tui.backend import AskRequest
from tui.widgets.tokenflow import TokenFlow

SIZE = (100, 30)
SECOND = "Paris is the capital of"
HOSTILE = "[bold]Hi[/] \x1b]0;owned\x07 [@click=app.quit]x[/]\nnext"
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def backend():
    return tui_backend()


async def ask(app: XaiApp, pilot, question: str, context: str | None = None) -> None:
    app.ask(AskRequest(question, context, max_new_tokens=6))
    await explained(app, pilot)
    assert app.status[1] == "info", app.status


def rows(app: XaiApp) -> list[str]:
    options = app.screen.query_one("#history-list")
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


async def test_going_back_to_the_first_question_shows_its_explanation(backend):
    from lrp_llm.engines.explain import explain

    app = XaiApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        await ask(app, pilot, QUESTION, CONTEXT)
        first = app.attribution
        await ask(app, pilot, SECOND)
        second = app.attribution
        assert first is not second and [e.attribution for e in app.history] == [first, second]
        assert all(not e.attribution.meta.get("partial") for e in app.history)  # partials are not kept
        assert [(e.question, e.context) for e in app.history] == [(QUESTION, CONTEXT), (SECOND, None)]

        await pilot.press("f7")
        assert app.current_mode == "history"
        shown = rows(app)
        assert len(shown) == 2 and "Normandy" in shown[0] and "Paris" in shown[1] and "AttnLRP" in shown[0]
        assert shown[1].startswith("▶")  # the explanation on screen
        calls = []
        backend_ask, backend.ask = backend.ask, lambda *a, **k: calls.append(a)  # nothing may be recomputed
        try:
            await pilot.press("up", "enter")
            await pilot.pause()
        finally:
            backend.ask = backend_ask
        assert calls == [] and app.current_mode == "ask"
        assert app.attribution is first and app.target == 0
        # what the Ask view shows equals the library's explanation of the first question
        n = first.prompt_length
        reference = explain(
            backend.model,
            backend.tokenizer,
            prompt_ids=first.input_ids[:n],
            answer_ids=first.input_ids[n:],
            method="attnlrp",
        )
        prompt = app.screen.query_one("#prompt", TokenFlow)
        await wait_for(pilot, lambda: prompt.target == reference.targets[0].position, what="the first target shown")
        np.testing.assert_allclose(prompt.values, reference.targets[0].relevance, rtol=1e-5, atol=1e-6)
        await pilot.press("right")
        np.testing.assert_allclose(prompt.values, reference.targets[1].relevance, rtol=1e-5, atol=1e-6)


async def test_a_method_switch_is_an_entry_of_its_own(backend):
    app = XaiApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        await ask(app, pilot, QUESTION, CONTEXT)
        app.set_method("cp-lrp")
        await settle(app, pilot)
        assert [(e.question, e.method) for e in app.history] == [(QUESTION, "attnlrp"), (QUESTION, "cp-lrp")]
        assert app.history[0].attribution.input_ids == app.history[1].attribution.input_ids
        app.show_entry(0)
        app.set_method("cp-lrp")  # the same switch again: replaces its entry, keeps the question
        await settle(app, pilot)
        assert [(e.question, e.method) for e in app.history] == [(QUESTION, "attnlrp"), (QUESTION, "cp-lrp")]


async def test_a_hostile_question_is_shown_literally(backend):
    app = XaiApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        await ask(app, pilot, HOSTILE)
        await pilot.press("f7")
        assert app.current_mode == "history" and app.return_code is None
        (row,) = rows(app)
        assert "[bold]Hi[/]" in row and "[@click=app.quit]" in row and "␛]0;owned␇" in row
        assert "\x1b" not in row and "\x07" not in row and "\n" not in row
        detail = str(app.screen.query_one("#history-detail").render())
        assert "[bold]Hi[/] ␛]0;owned␇ [@click=app.quit]x[/] next" in detail and "\x1b" not in detail
        await pilot.click("#history-list", offset=(40, 1))  # a click on the row, not on the markup's action
        assert app.return_code is None and app.current_mode == "ask"


async def save_to(app: XaiApp, pilot, path: str) -> None:
    await pilot.press("ctrl+shift+s")
    dialog = app.screen
    assert type(dialog).__name__ == "PathDialog"
    dialog.query_one("#dialog-path").value = path
    await pilot.press("enter")
    await settle(app, pilot)


async def test_a_saved_session_reopens_with_xai_tui_open(backend, tmp_path, monkeypatch):
    from tui.cli import main

    path = tmp_path / "session.json"
    app = XaiApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+shift+s")
        assert app.status[1] == "error" and "history is empty" in app.status[0]
        await ask(app, pilot, QUESTION, CONTEXT)
        await ask(app, pilot, SECOND)
        await save_to(app, pilot, str(path))
        assert app.status == (f"wrote session to {path}", "info")
        saved = [e.to_dict() for e in app.history]

    started: list[XaiApp] = []
    monkeypatch.setattr("tui.app.run_app", lambda app: started.append(app) or 0)
    assert main(["open", str(path)]) == 0
    (reopened,) = started
    assert reopened.backend is None
    async with reopened.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(reopened.history) == 2, what="the history filled")
        assert [e.to_dict() for e in reopened.history] == saved
        last = reopened.history[-1].attribution
        assert reopened.attribution is last and reopened.current_mode == "ask"
        np.testing.assert_allclose(
            reopened.screen.query_one("#prompt", TokenFlow).values, last.targets[0].relevance, rtol=0, atol=0
        )
        await pilot.press("f7")
        assert len(rows(reopened)) == 2
        await pilot.press("up", "enter")
        assert reopened.attribution is reopened.history[0].attribution  # no model needed to go back
        before = path.read_bytes()
        await save_to(reopened, pilot, str(path))  # never over the file it was opened from
        assert reopened.status[1] == "error" and "is also the result opened from" in reopened.status[0]
        assert path.read_bytes() == before
        copy = tmp_path / "copy.json"
        await save_to(reopened, pilot, str(copy))
        assert Session.load(copy).to_dict()["entries"] == saved


def snapshot_history() -> tuple[SessionEntry, ...]:
    return (
        SessionEntry(HOSTILE, causal(), "2026-01-31T12:00:00+01:00", context="a passage"),
        SessionEntry("copy: a b", seq2seq(), "2026-01-31T12:01:05+01:00"),
        SessionEntry("Hello?", causal(), "2026-01-31T12:02:30+01:00"),
    )


async def _history_shown(pilot) -> None:
    app = pilot.app
    app.history = snapshot_history()
    app.show_entry(1)
    await pilot.press("f7")
    await wait_for(pilot, lambda: app.current_mode == "history", what="the History view")
    await pilot.pause()


def test_history_view_snapshot(snap_compare):
    assert snap_compare(XaiApp(None), terminal_size=SIZE, run_before=_history_shown)


def test_history_view_snapshot_80x24(snap_compare):
    assert snap_compare(XaiApp(None), terminal_size=(80, 24), run_before=_history_shown)


async def test_a_result_file_opened_twice_is_one_entry(tmp_path):
    path = tmp_path / "result.json"
    causal().save(path)
    app = XaiApp(None, result_path=str(path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.open_result(str(path))
        await settle(app, pilot)
        assert len(app.history) == 1 and app.history[0].question == "<s> Hello"
        assert app.history[0].attribution is app.attribution
