"""SVG snapshots of the app's screens at a fixed terminal size (pytest-textual-snapshot).

Update after an intended change of the look with ``pytest tests/app/test_tui_snapshots.py
--snapshot-update`` and review the SVGs in the diff.
"""

from __future__ import annotations

import pytest

from tests.support.tui_support import CONTEXT, QUESTION, settle, tui_backend, wait_for
from tui.app import XaiApp

# the references below are AttnLRP explanations; the default method has its own test (test_tui_app.py)
PINNED = "attnlrp"

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (100, 30)


@pytest.fixture(scope="module")
def backend():
    return tui_backend()


def asked(*keys: str, target: int = 0):
    """run_before: paste the question, run it, wait until the whole answer is explained and the answer
    has the focus, then press ``keys`` and wait until answer token ``target`` is shown."""

    async def run(pilot) -> None:
        from tui.widgets.tokenflow import AnswerTokens

        app = pilot.app
        app.screen.query_one("#context").insert_text_at_cursor(CONTEXT)
        app.screen.query_one("#question").focus()
        app.screen.query_one("#question").insert_text_at_cursor(QUESTION)
        await pilot.press("enter")
        await settle(app, pilot)
        await wait_for(
            pilot,
            lambda: (
                app.attribution is not None
                and not app.attribution.meta.get("partial")
                and app.progress is None
                and isinstance(app.focused, AnswerTokens)
            ),
            what="the explained answer with the focus",
        )
        await pilot.press(*keys)
        await wait_for(pilot, lambda: app.target == target, what=f"answer token {target}")
        await pilot.pause()

    return run


def test_ask_view(snap_compare, backend):
    assert snap_compare(
        XaiApp(backend, method=PINNED), terminal_size=SIZE, run_before=asked("right", "right", target=2)
    )


def test_ask_view_words(snap_compare, backend):
    assert snap_compare(
        XaiApp(backend, method=PINNED), terminal_size=SIZE, run_before=asked("right", "ctrl+g", "j", target=1)
    )


def test_ask_view_80x24(snap_compare, backend):
    assert snap_compare(XaiApp(backend, method=PINNED), terminal_size=(80, 24), run_before=asked("right", target=1))


def test_long_range_view(snap_compare, backend):
    assert snap_compare(
        XaiApp(backend, method=PINNED),
        terminal_size=SIZE,
        run_before=asked("right", "f3", "minus", "minus", "j", target=1),
    )


def test_help_screen(snap_compare, backend):
    assert snap_compare(XaiApp(backend, method=PINNED), terminal_size=SIZE, press=["f1"])


def test_empty_question_error(snap_compare, backend):
    assert snap_compare(XaiApp(backend, method=PINNED), terminal_size=SIZE, press=["enter"])


def test_similarity_view(snap_compare, backend):
    from tests.support.tui_support import tui_encoder

    async def run(pilot) -> None:
        app = pilot.app
        await pilot.press("f4")
        app.screen.query_one("#sim-a").insert_text_at_cursor("the cat sat on the mat")
        app.screen.query_one("#sim-b").focus()
        app.screen.query_one("#sim-b").insert_text_at_cursor("a kitten sleeps on the rug")
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("j", "j")
        await pilot.pause()

    assert snap_compare(XaiApp(backend, method=PINNED, encoder=tui_encoder()), terminal_size=SIZE, run_before=run)


def test_patching_view(snap_compare, backend):
    async def run(pilot) -> None:
        app = pilot.app
        await settle(app, pilot)
        await pilot.press("f5")
        fields = ("The capital of France is", "The capital of Italy is", " Paris", " Italy")
        for name, text in zip(("clean", "corrupted", "answer", "wrong"), fields):
            app.screen.query_one(f"#patch-{name}").insert_text_at_cursor(text)
        app.screen.query_one("#patch-wrong").focus()
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("left")
        await pilot.pause()

    assert snap_compare(XaiApp(backend, method=PINNED), terminal_size=SIZE, run_before=run)
