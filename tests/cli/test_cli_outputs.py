"""The output files of every subcommand: refused up front, in one `error:` line, when writing
them would destroy an input, another output or something that is not a regular file."""

from __future__ import annotations

import os

import pytest

from tui.cli import main

# (subcommand arguments before the outputs) for each command that writes --json / --html
COMMANDS = {
    "explain": ["explain", "--prompt", "Hello", "--generate", "1"],
    "evaluate": ["evaluate", "--steps", "2", "--limit", "1"],
    "patch": ["patch", "--clean", "a b", "--corrupted", "a c", "--answer", " x", "--wrong", " y"],
    "longrange": ["longrange", "--generate", "1"],
    "similarity": ["similarity", "--a", "x", "--b", "y"],
}


@pytest.fixture
def inputs(tmp_path):
    data = tmp_path / "items.jsonl"
    data.write_text('{"text": "one two", "answer": "three"}\n')
    doc = tmp_path / "doc.txt"
    doc.write_text("one two three\n")
    return {"data": data, "doc": doc}


def _run(argv, capsys) -> str:
    """Run ``xai-tui argv``; it must fail with one `error:` line (returned) and no traceback."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_an_output_equal_to_the_input_is_refused_before_the_model_loads(inputs, tmp_path, capsys):
    data, doc = inputs["data"], inputs["doc"]
    before = data.read_bytes()
    model = ["--model", str(tmp_path / "no-model-needed")]  # the check comes before the model loads
    line = _run(["evaluate", "--data", str(data), *model, "--json", str(data)], capsys)
    assert "is also the input --data" in line and data.read_bytes() == before
    os.link(data, tmp_path / "hard.jsonl")
    line = _run(["evaluate", "--data", str(data), *model, "--html", str(tmp_path / "hard.jsonl")], capsys)
    assert "is also the input --data" in line and data.read_bytes() == before
    line = _run(["longrange", "--file", str(doc), *model, "--json", str(tmp_path / "." / "doc.txt")], capsys)
    assert "is also the input --file" in line and doc.read_text() == "one two three\n"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    line = _run(["explain", "--model", str(gguf), "--prompt", "x", "--json", str(gguf)], capsys)
    assert "is also the input --model" in line and gguf.read_bytes() == b"GGUF"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_bad_outputs_in_one_line(command, inputs, tmp_path, capsys):
    argv = [*COMMANDS[command], "--model", str(tmp_path / "no-model-needed")]
    if command == "evaluate":
        argv += ["--data", str(inputs["data"])]
    if command == "longrange":
        argv += ["--file", str(inputs["doc"])]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = tmp_path / "real.json"
    target.write_text("keep")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    cases = [
        (["--json", ""], "--json is empty; pass a file name"),
        (["--json", "/dev/null"], "/dev/null is a device, not a regular file"),
        (["--json", str(fifo)], "is a named pipe (FIFO), not a regular file"),
        (["--json", str(link)], "is a symbolic link, not a regular file"),
    ]
    if command != "longrange":  # the only command without --html
        cases += [
            (["--html", ""], "--html is empty"),
            (["--json", str(target), "--html", str(tmp_path / "." / "real.json")], "--json and --html name the same"),
        ]
    for extra, message in cases:
        line = _run([*argv, *extra, "--quiet"], capsys)
        assert message in line, (extra, line)
    assert target.read_text() == "keep" and os.readlink(link) == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.txt", "fifo", "items.jsonl", "link.json", "real.json"]
