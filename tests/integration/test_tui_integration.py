"""The app on the bundled SmolLM2 (real weights): in-process with a Pilot, and the real command in tmux."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.support import REPO_ROOT
from tests.support.tmux import tmux_pane
from tests.support.tui_support import settle

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CONTEXT = "The Normans gave their name to Normandy, a region in France."
QUESTION = "In what country is Normandy located? Answer briefly."
ROOT = REPO_ROOT


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.mark.slow
async def test_app_on_smollm2_shows_the_library_relevance():
    from lrp_llm.engines.explain import explain
    from tui.app import XaiApp
    from tui.backend import ModelBackend
    from tui.widgets.tokenflow import TokenFlow

    backend = ModelBackend()
    app = XaiApp(backend, question=QUESTION, context=CONTEXT, max_new_tokens=4)
    async with app.run_test(size=(100, 30)) as pilot:
        while app.attribution is None and app.status[1] != "error":
            await pilot.pause(0.2)
        assert app.status[1] != "error", app.status
        await settle(app, pilot)
        await pilot.press("right")
        expected = explain(backend.model, backend.tokenizer, QUESTION, context=CONTEXT, generate=4)
        assert app.attribution.tokens == expected.tokens
        np.testing.assert_allclose(
            app.screen.query_one("#prompt", TokenFlow).values, expected.targets[1].relevance, rtol=1e-4, atol=1e-5
        )


def test_real_command_in_tmux():
    """`xai-tui` in a real terminal: type a question, read the screen back with capture-pane."""
    with tmux_pane(f"{sys.executable} -m tui --generate 4", ROOT, "test") as pane:
        pane.wait_until("Ask & explain", 20)  # painted before the model has loaded
        pane.wait_until("loaded", 180)
        pane.type(QUESTION)
        pane.keys("Enter")
        shown = pane.wait_until("answer tokens explained", 180)
        assert "Top sources of" in shown and "logit" in shown
        pane.keys("Right")
        pane.wait_until("token 2/", 10)
