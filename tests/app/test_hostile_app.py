"""The app with hostile text: typed into its fields, in a result's tokens and names, in its file
name. What the screen sends to the terminal (the compositor's update, as the driver writes it)
holds only the app's own SGR and cursor moves; the text is there, visibly escaped; markup-like
tokens show literally and nothing crashes."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from tests.support.hostile import MARKUP, NASTY, OSC_TITLE, SCREEN, leaks
from tests.support.tui_support import CONTEXT, QUESTION, settle, tui_backend, tui_encoder
from tui.app import XaiApp

SIZE = (160, 50)
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("one_thread")]
# a result file is UTF-8: no lone surrogate fits in it (loading refuses one, tested in tests/unit)
TOKENS = [s for s in NASTY if not any("\ud800" <= c <= "\udfff" for c in s)]


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


def screen_output(app) -> str:
    """Everything the current screen would send to the terminal, as one string."""
    update = app.screen._compositor.render_update(full=True)
    return "".join(update.render_segments(app.console))


def assert_safe(app) -> str:
    """Check the screen's output for leaks; return its text without the app's own sequences."""
    shown = screen_output(app)
    assert leaks(shown, ours=SCREEN) == []
    return re.sub(SCREEN, "", shown)


@pytest.fixture(scope="module")
def backend():
    return tui_backend()


@pytest.fixture(scope="module")
def attribution(backend):
    """A real explanation whose token strings, model name and answer were replaced by hostile text."""
    from lrp_llm.engines.explain import explain

    a = explain(backend.model, backend.tokenizer, QUESTION, context=CONTEXT, generate=6, method="attnlrp")
    tokens = [TOKENS[i % len(TOKENS)] for i in range(len(a.tokens))]
    targets = [dataclasses.replace(t, token=tokens[t.position]) for t in a.targets]
    return dataclasses.replace(a, tokens=tokens, targets=targets, model=f"model{OSC_TITLE}[/b]")


async def test_typed_controls_show_visibly_in_the_input_fields(backend):
    app = XaiApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        question, context = app.screen.query_one("#question"), app.screen.query_one("#context")
        context.insert_text_at_cursor(f"ctx {OSC_TITLE} \x9b2J [/b]")
        await pilot.click("#question")
        question.insert_text_at_cursor("q\x1b[2J \u202eevil")
        await pilot.press("left")
        await pilot.pause()
        shown = assert_safe(app)
        assert "␛]0;PWNED␇" in shown and "␛[2J" in shown and "[/b]" in shown
        assert question.value == "q\x1b[2J \u202eevil"  # the value is what was typed; only its display changes
        assert question._position_to_cell(2) == 2  # ESC shown in one cell, the terminal cursor follows


# "[/b]" spans a folder and the file: the path string holds it, as in the issue
@pytest.mark.parametrize("name", ["result.json", f"r{OSC_TITLE}[/b][@click=app.quit].json"])
async def test_open_shows_hostile_tokens_and_names_literally(attribution, tmp_path, name):
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    attribution.save(path)
    app = XaiApp(None, result_path=str(path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.attribution is not None and app.attribution.tokens == attribution.tokens
        for _ in range(3):
            shown = assert_safe(app)
            assert "␛]0;PWNED␇" in shown and "\\x9b2J" in shown and "\\u202e" in shown
            assert any(m in shown for m in MARKUP)
            await pilot.press("right")
        for view in ("f3", "f2"):
            await pilot.press(view)
            await pilot.pause()
            assert "␛" in assert_safe(app)
        assert app.is_running  # [@click=app.quit] in a token is text, not an action


async def test_errors_with_hostile_paths_are_visible(tmp_path):
    path = tmp_path / f"bad{OSC_TITLE}[/b].json"
    path.parent.mkdir()
    path.write_bytes(b'{"schema": "\x1b]0;x\x07", "tokens": ["\xff"]}')
    app = XaiApp(None, result_path=str(path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.status[1] == "error"
        assert "␛]0;PWNED␇[/b]" in assert_safe(app)


async def test_similarity_and_patching_results_with_hostile_text(backend, tmp_path):
    from tui.backend import PatchRequest

    encoder = tui_encoder()
    e = encoder.compare("the cat sat on the mat", "a dog sat on the rug", "bilrp")
    hostile = dict(
        tokens_a=[TOKENS[i % len(TOKENS)] for i in range(len(e.tokens_a))],
        tokens_b=[TOKENS[-1 - i % len(TOKENS)] for i in range(len(e.tokens_b))],
        model=f"enc{OSC_TITLE}",
        text_a=OSC_TITLE,
    )
    e = dataclasses.replace(e, **hostile)
    r = backend.patch(
        PatchRequest("The capital of France is", "The capital of Italy is", " Paris", " Rome", ("resid",))
    )
    columns = [TOKENS[i % len(TOKENS)] for i in range(len(r.grids[0].columns))]
    r = dataclasses.replace(
        r,
        grids=[dataclasses.replace(g, columns=columns) for g in r.grids],
        answer=f" Paris{OSC_TITLE}",
        wrong="[/b]",
        model=f"m{OSC_TITLE}",
    )
    for result, name in ((e, "sim.json"), (r, "patch.json")):
        path = tmp_path / name
        result.save(path)
        assert json.loads(path.read_text())["schema"]
        app = XaiApp(None, result_path=str(path))
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.pause()
            assert app.current_mode in ("similarity", "patching")
            for key in ("right", "down", "right"):
                shown = assert_safe(app)
                assert "␛" in shown
                await pilot.press(key)
            assert app.is_running


async def test_open_dialog_shows_a_hostile_working_folder_visibly(backend, tmp_path, monkeypatch):
    folder = tmp_path / f"w{OSC_TITLE}\u202e"
    folder.mkdir()
    monkeypatch.chdir(folder)
    app = XaiApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert "w␛]0;PWNED␇\ufffd" in assert_safe(app)  # one cell per code point in an editable field
