"""The command line's contract: every argument error is one ``error:`` line (exit 2, no usage
block), every numeric option is range-checked before any work, usage and help read right,
checkpoint problems and warnings reach the terminal as one line each, patch checks the
prompt length like explain."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import REPO_ROOT
from tui.cli import build_parser, main
from tui.commands.common import fraction_range, int_range

COMMANDS = ("app", "explain", "patch", "evaluate", "longrange", "similarity", "open")
# the least each command needs to get past its required options
BASE = {
    "app": ["app"],
    "explain": ["explain", "--prompt", "x"],
    "patch": ["patch", "--clean", "a", "--corrupted", "b", "--answer", "c", "--wrong", "d"],
    "evaluate": ["evaluate", "--data", "x.jsonl"],
    "longrange": ["longrange", "--file", "x.txt"],
    "similarity": ["similarity", "--a", "x", "--b", "y"],
    "components": ["components", "--prompt", "x"],
}


def _one_error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "usage:" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["explain", "--prompt", "x", "--dtype", "float8"], "--dtype: invalid choice: 'float8'"),
        (["explain", "--prompt", "x", "--method", "lime"], "--method: invalid choice: 'lime'"),
        (["explain", "--prompt", "x", "--target", "y", "--generate", "3"], "--generate: not allowed with"),
        (["longrange", "--file", "f", "--target", "y", "--generate", "3"], "not allowed with"),
        (["--dtype", "float8"], "--dtype: invalid choice"),  # routed to the app
        (["patch", "--clean", "a"], "the following arguments are required"),
        (["explain", "--prompt", "x", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["similarity", "--a", "x", "--b", "y", "--mode", "l2"], "--mode: invalid choice"),
        (["nosuchcommand-but-a-path", "--device", "tpu"], "--device: invalid choice"),
    ],
)
def test_argument_errors_are_one_line(argv, expected, capsys):
    # before: argparse's usage block of up to 9 lines, then "xai-tui: error: ..."
    err = _one_error_line(main(argv), capsys.readouterr().err)
    assert expected in err and "--help" in err


# every numeric option: (command, option, a value below the range, a value above it)
NUMERIC = [
    ("app", "--generate", "0", "100001"),
    ("explain", "--generate", "0", "100001"),
    ("explain", "--steps", "0", str(10**9)),
    ("explain", "--seed", "-1", str(2**64)),
    ("explain", "--top", "-1", "10001"),
    ("patch", "--top", "-1", "10001"),
    ("evaluate", "--limit", "0", str(10**12)),
    ("evaluate", "--steps", "0", "5000"),
    ("evaluate", "--ig-steps", "0", "5000"),
    ("evaluate", "--batch-size", "0", "5000"),
    ("evaluate", "--max-new-tokens", "0", "100001"),
    ("longrange", "--generate", "0", "100001"),
    ("longrange", "--steps", "0", "5000"),
    ("longrange", "--far", "-1", str(10**8)),
    ("longrange", "--top", "-5", "10001"),
    ("longrange", "--fraction", "0", "1.5"),
    ("similarity", "--top", "-1", "10001"),
    ("similarity", "--show", "-1", "10001"),
    ("components", "--generate", "0", "100001"),
    ("components", "--token", "-1", "100001"),
    ("components", "--top", "0", "10001"),
]


@pytest.mark.parametrize(("command", "option", "low", "high"), NUMERIC)
def test_numeric_options_are_range_checked_before_any_work(command, option, low, high, capsys):
    # before: --steps 10**9 started an 8 GB allocation, --top -1 was accepted, an oversized
    # --seed ended in a bare ValueError after the model had loaded
    for value in (low, high, "nan", "12abc", ""):
        code = main([*BASE[command], option, value, "--model", "/nonexistent/model"])
        err = _one_error_line(code, capsys.readouterr().err)
        assert err.startswith(f"error: {option} must be"), err


def test_every_numeric_option_has_a_range():
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    unchecked = []
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.type in (int, float):
                unchecked.append(f"{name} {action.option_strings}")
    assert unchecked == []
    checked = {
        (name, action.option_strings[-1])
        for name, command in sub.choices.items()
        for action in command._actions
        if getattr(action.type, "__name__", "") in ("integer", "number")
    }
    assert checked == {(c, o) for c, o, _, _ in NUMERIC}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(min_value=-(2**70), max_value=2**70).map(str), st.text(max_size=12)))
def test_int_range_accepts_exactly_the_range(text):
    parse = int_range(-3, 1000)
    try:
        value = int(text.strip(), 10)
    except ValueError:
        value = None
    if value is not None and -3 <= value <= 1000:
        assert parse(text) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="-3 to 1000"):
            parse(text)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=8)))
def test_fraction_range_accepts_exactly_the_range(text):
    parse = fraction_range(0.0, 1.0)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if 0.0 < value <= 1.0:
        assert parse(text) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="greater than 0 and at most 1"):
            parse(text)


@pytest.mark.parametrize("command", COMMANDS)
def test_usage_lines_name_the_command(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    # before: "usage: xai-tui [CHECKPOINT] [options] ... xai-tui COMMAND ... explain"
    assert out.startswith(f"usage: xai-tui {command} ") and "[CHECKPOINT] [options]" not in out
    assert "%%" not in out  # before: evaluate --help showed "95%%"


def test_evaluate_help_shows_the_percent_sign(capsys):
    main(["evaluate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "95% confidence" in out and "10% of tokens" in out


# ------------------------------------------------------------------- checkpoints and warnings
@pytest.fixture(scope="module")
def missing_layer(tiny_dir, tmp_path_factory):
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("missing") / "ckpt"
    shutil.copytree(tiny_dir, folder)
    path = folder / "model.safetensors"
    state = {k: v for k, v in load_file(str(path)).items() if ".layers.1." not in k}
    save_file(state, str(path), metadata={"format": "pt"})
    return folder


def _xai(*argv: str) -> subprocess.CompletedProcess:
    """The real command in a fresh interpreter: what a terminal shows, warnings included."""
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def test_missing_weights_are_one_error_line_or_one_warning_line(missing_layer, tmp_path):
    run = ["explain", "--model", str(missing_layer), "--prompt", "the", "--target", " paris", "--quiet"]
    refused = _xai(*run, "--json", str(tmp_path / "r.json"))
    _one_error_line(refused.returncode, refused.stderr)
    assert "missing model.layers.1." in refused.stderr and not (tmp_path / "r.json").exists()
    allowed = _xai(*run, "--allow-missing-weights", "--heatmap", "none")
    assert allowed.returncode == 0, allowed.stderr
    lines = allowed.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: the weights in ") and "randomly initialised" in lines[0]


def test_a_refused_pickle_is_one_line_without_torch_warnings(tiny_dir, tmp_path):
    import pickle

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_dir, folder)
    (folder / "model.safetensors").unlink()
    # a plain protocol-4 pickle: torch warns about the protocol, then refuses the file
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    done = _xai("explain", "--model", str(folder), "--prompt", "the", "--target", " paris", "--quiet", "--allow-pickle")
    # before: torch's UserWarning (two lines) came first
    _one_error_line(done.returncode, done.stderr)
    assert "convert the checkpoint to safetensors" in done.stderr and "\x1b" not in done.stderr


# ----------------------------------------------------------------------- patch context length
def test_patch_refuses_prompts_longer_than_the_context(tiny_dir, tmp_path, capsys):
    limit = json.loads((tiny_dir / "config.json").read_text())["max_position_embeddings"]
    clean = " ".join(["the capital of france is"] * (limit // 5 + 1))
    out = tmp_path / "p.json"
    code = main(
        ["patch", "--model", str(tiny_dir), "--clean", clean, "--corrupted", clean.replace("france", "italy")]
        + ["--answer", " paris", "--wrong", " rome", "--quiet", "--json", str(out)]
    )
    # before: ran and returned a result for positions the model was never trained on
    err = _one_error_line(code, capsys.readouterr().err)
    assert f"the model's context is {limit}" in err and not out.exists()


def test_evaluate_refuses_a_lone_surrogate_before_loading_a_model(tmp_path, capsys):
    data = tmp_path / "items.jsonl"
    data.write_text('{"id": "q\\udc00", "text": "the capital of france is", "answer": " paris"}\n')
    out = tmp_path / "ev.json"
    # --model points nowhere: the data error comes first, and no file is written
    code = main(["evaluate", "--model", str(tmp_path / "none"), "--data", str(data), "--json", str(out), "--quiet"])
    err = _one_error_line(code, capsys.readouterr().err)
    assert "items.jsonl line 1: 'id' holds a lone surrogate (\\udc00)" in err and not out.exists()


def test_the_app_backend_shows_the_missing_weights_warning_in_its_summary(missing_layer):
    from lrp_llm.errors import CheckpointError
    from tui.backend import LoadOptions, ModelBackend

    with pytest.raises(CheckpointError, match="missing model.layers.1."):
        ModelBackend(LoadOptions(path=str(missing_layer))).load()
    backend = ModelBackend(LoadOptions(path=str(missing_layer), allow_missing=True))
    # in the app a warning on stderr would garble the screen: it goes to the status line
    assert "WARNING: tensors missing from the checkpoint are random" in backend.load()
    assert len(backend.load_warnings) == 1 and "model.layers.1." in backend.load_warnings[0]


@pytest.mark.parametrize(("option", "what"), [("--prompt", "prompt"), ("--context", "context"), ("--target", "target")])
def test_undecodable_text_is_one_line_naming_the_option(tiny_dir, option, what, capsys):
    # bytes that are not UTF-8 reach argv as lone surrogates (surrogateescape); no tokenizer takes them
    options = {"--prompt": "Hello", "--target": " there", option: "caf\udce9"}
    argv = ["explain", "--model", str(tiny_dir), "--quiet", *[x for kv in options.items() for x in kv]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: the {what} is not valid text"), err
    assert "character 4" in err[0]
