"""The app's files: a result opened in the app is never overwritten by an export, exports never
replace what is not a regular file, and a bad result file is one error line on screen."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lrp_llm.results.attribution import Attribution, TargetRelevance
from tests.support.result_files import corrupted
from tests.support.tui_support import settle, wait_for
from tui.app import XaiApp

SIZE = (100, 30)
pytestmark = [pytest.mark.anyio]


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


def small_attribution() -> Attribution:
    return Attribution(
        model="m",
        method="attnlrp",
        tokens=["<s>", " Hello", " world", "!"],
        input_ids=[1, 5, 6, 7],
        prompt_length=2,
        targets=[
            TargetRelevance(2, " world", 6, 3.0, 0.5, np.array([0.5, 2.0])),
            TargetRelevance(3, "!", 7, 1.0, 0.25, np.array([0.1, -0.2, 0.3])),
        ],
        seconds=0.1,
    )


async def export_to(app: XaiApp, pilot, path: str) -> None:
    """Ctrl+S, the path typed into the dialog, Enter (the format is the file name's)."""
    await pilot.press("ctrl+s")
    dialog = app.screen
    assert type(dialog).__name__ == "PathDialog"
    dialog.query_one("#dialog-path").value = path
    await pilot.press("enter")
    await settle(app, pilot)


async def test_an_export_never_overwrites_the_opened_result_or_a_special_file(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    small_attribution().save(path)
    before = path.read_bytes()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    monkeypatch.chdir(tmp_path)
    app = XaiApp(None, result_path=str(path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.attribution is not None
        for spelling in (str(path), "result.json", "./result.json"):
            await export_to(app, pilot, spelling)
            assert app.status[1] == "error" and "is also the result opened from" in app.status[0], app.status
            assert path.read_bytes() == before
        await export_to(app, pilot, str(fifo))
        assert app.status[1] == "error" and "not a regular file" in app.status[0]
        assert os.path.exists(fifo) and not os.path.isfile(fifo)
        await export_to(app, pilot, str(tmp_path / "copy.json"))
        assert app.status[0].startswith("wrote"), app.status
        assert Attribution.load(tmp_path / "copy.json").tokens == small_attribution().tokens


async def test_a_bad_result_file_is_one_error_line_naming_the_field(tmp_path):
    bad = small_attribution().to_dict()
    bad["targets"][1]["relevance"] = [0.1, 0.2]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    app = XaiApp(None, result_path=str(path))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.status[1] == "error", what="the error message")
        assert "targets[1].relevance has 2 values but the target is at position 3" in app.status[0]
        assert "\n" not in app.status[0] and app.attribution is None


# --------------------------------------------- fuzz: what loads is shown by every view
# no shrinking: each example is an app session of a dozen files (seconds); a failure names its files
@settings(
    max_examples=5,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(cases=st.lists(corrupted(), min_size=12, max_size=12))
def test_randomly_corrupted_files_are_shown_or_refused_in_one_line(cases, tmp_path_factory):
    """Each corrupted result file (tests.support.result_files) opened in one app session: it is
    refused with one error line, or shown, and stays shown while the views are walked through
    (a crash of any widget would end the session with its exception)."""
    import asyncio

    folder = tmp_path_factory.mktemp("fuzz")
    paths = []
    for i, (_, data) in enumerate(cases):
        paths.append(folder / f"r{i}.json")
        paths[-1].write_text(json.dumps(data, allow_nan=True))

    async def walk() -> None:
        app = XaiApp(None)
        async with app.run_test(size=SIZE) as pilot:
            for path in paths:
                app.open_result(str(path))
                await settle(app, pilot)
                await wait_for(pilot, lambda: app.status[1] != "busy", what="the file to be read")
                text, kind = app.status
                assert "\n" not in text
                if kind == "error":
                    assert text.startswith(f"error: {path}: ") and "XAI_TUI_DEBUG" not in text, text
                    continue
                assert str(path) in text, app.status
                keys = (
                    ["f3", "right", "right", "f2", "right", "left"] if app.current_mode in ("ask", "longrange") else []
                )
                keys += ["f4", "f5", "down", "right", "f2"]
                for key in keys:
                    await pilot.press(key)
                    await pilot.pause()
            assert app.is_running  # no widget crashed on what loaded

    asyncio.run(walk())
