"""The `xai-tui` entry point: routing to the app, fast --help, errors, and the core's independence of Textual."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.support import REPO_ROOT
from tui.cli import main, route

ROOT = REPO_ROOT
COMMANDS = {"app": None, "open": None, "explain": None}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["app"]),
        (["model.gguf"], ["app", "model.gguf"]),
        (["./ckpt", "--device", "cuda"], ["app", "./ckpt", "--device", "cuda"]),
        (["--dtype", "float32"], ["app", "--dtype", "float32"]),
        (["explain", "--prompt", "x"], ["explain", "--prompt", "x"]),
        (["open", "r.json"], ["open", "r.json"]),
        (["--help"], ["--help"]),
        (["-h"], ["-h"]),
        (["--version"], ["--version"]),
    ],
)
def test_route_defaults_to_the_app(argv, expected):
    assert route(argv, COMMANDS) == expected


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_help_is_fast_and_imports_neither_torch_nor_textual():
    code = (
        "import sys, time, contextlib, io\n"
        "t = time.perf_counter()\n"
        "from tui.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print(time.perf_counter() - t)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'textual', 'numpy') if m in sys.modules))\n"
        "print('CHECKPOINT' in out.getvalue())\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    seconds, heavy, mentions = proc.stdout.splitlines()
    assert heavy == "[]" and mentions == "True"
    assert float(seconds) < 2.0  # typically ~0.05 s; torch alone takes seconds to import


def test_the_core_never_imports_textual():
    code = (
        "import importlib, pkgutil, sys\n"
        "import lrp_llm\n"
        "names = [m.name for m in pkgutil.walk_packages(lrp_llm.__path__, 'lrp_llm.')]\n"
        "try:\n"
        "    import patching\n"
        "    names += ['patching'] + [m.name for m in pkgutil.walk_packages(patching.__path__, 'patching.')]\n"
        "except ImportError:\n"
        "    pass\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names), 'textual' in sys.modules)\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    count, has_textual = proc.stdout.split()
    assert int(count) >= 8 and has_textual == "False"


def test_app_and_open_report_bad_paths_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing-model")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no such file or folder") and "Traceback" not in err
    assert main(["open", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.startswith("error: no such file")
    assert main(["app", "--generate", "0"]) == 2
    assert "--generate" in capsys.readouterr().err


def test_open_runs_the_app_on_a_saved_result(tmp_path, monkeypatch):
    """`xai-tui open FILE` builds the app in JSON mode (no model) and runs it."""
    from lrp_llm.results.attribution import Attribution, TargetRelevance

    a = Attribution(
        model="m",
        method="attnlrp",
        tokens=["<s>", " Hello", " world"],
        input_ids=[1, 5, 6],
        prompt_length=2,
        targets=[TargetRelevance(2, " world", 6, 3.0, 0.5, np.array([0.5, 2.0]))],
        seconds=0.1,
    )
    path = tmp_path / "r.json"
    a.save(path)
    seen = {}

    def fake_run(app):
        seen["app"] = app
        return 0

    monkeypatch.setattr("tui.app.run_app", fake_run)
    assert main(["open", str(path)]) == 0
    app = seen["app"]
    assert app.backend is None and app.result_path == str(path)
    assert json.loads(path.read_text())["tokens"] == a.tokens


def test_checkpoint_argument_builds_a_model_backend(tmp_path, monkeypatch):
    seen = {}

    def fake_run(app):
        seen["app"] = app
        return 0

    monkeypatch.setattr("tui.app.run_app", fake_run)
    assert main([str(tmp_path), "--dtype", "float32", "--prompt", "hi", "--plain", "--method", "cp-lrp"]) == 0
    app = seen["app"]
    assert app.backend.options.path == str(tmp_path) and app.backend.options.dtype == "float32"
    assert app.initial_question == "hi" and app.chat is False and app.method == "cp-lrp"


def test_first_screen_paints_before_torch_is_imported():
    """The app's module and its first screen need neither torch, transformers nor numpy."""
    code = (
        "import sys, asyncio\n"
        "from tui.app import XaiApp\n"
        "async def main():\n"
        "    app = XaiApp(None)\n"
        "    async with app.run_test(size=(100, 30)) as pilot:\n"
        "        await pilot.pause()\n"
        "        print(type(app.screen).__name__)\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))\n"
    )
    start = time.perf_counter()
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["AskScreen", "[]"], (proc.stdout, time.perf_counter() - start)


def test_the_cli_offers_exactly_the_library_methods():
    """`xai-tui explain --method` offers the library's causal-LM methods (lrp_llm.methods), in order, each labelled."""
    import argparse

    from lrp_llm.methods import METHODS, label
    from tui.cli import build_parser

    parser, _ = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    choices = next(a.choices for a in commands["explain"]._actions if "--method" in a.option_strings)
    assert (
        tuple(choices)
        == METHODS
        == (
            "attnlrp",
            "cp-lrp",
            "mambalrp",
            "grad-x-input",
            "saliency",
            "integrated-gradients",
            "hidden-attention",
            "random",
            "attnlrp-qk-held",
            "attnlrp-qk-late",
            "attnlrp-eps",
            "attnlrp-sink",
        )
    )
    assert all(label(m) != m for m in METHODS)
