"""The real `xai-tui` command in a tmux pane: start it, read the screen back, type into it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


class Pane:
    """A detached tmux session running one command; ``screen()`` is what the pane shows now."""

    def __init__(self, session: str) -> None:
        self.session = session

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.session], capture_output=True, text=True).stdout

    def wait_until(self, text: str, seconds: float) -> str:
        """The screen once it shows ``text`` (polled); an AssertionError with the screen after ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.3)
        raise AssertionError(f"{text!r} not on screen after {seconds} s:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        """tmux key names (``Enter``, ``Right``, ``v``)."""
        subprocess.run(["tmux", "send-keys", "-t", self.session, *keys], check=True)

    def type(self, text: str) -> None:
        """``text`` typed literally."""
        subprocess.run(["tmux", "send-keys", "-t", self.session, "-l", text], check=True)


@contextmanager
def tmux_pane(command: str, cwd, name: str, size: tuple[int, int] = (100, 30)) -> Iterator[Pane]:
    """``command`` in a new detached pane of ``size``; quit with Ctrl+Q and the session removed at the end.
    Skips the test where tmux is not installed."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    session = f"xai-tui-{name}-{os.getpid()}"
    width, height = size
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), command], cwd=cwd, check=True
    )
    try:
        yield Pane(session)
    finally:
        subprocess.run(["tmux", "send-keys", "-t", session, "C-q"])
        time.sleep(1)
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
