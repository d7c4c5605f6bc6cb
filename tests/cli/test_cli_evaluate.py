"""`xai-tui evaluate`: results table, JSON / HTML files, one-line errors, clean Ctrl-C."""

from __future__ import annotations

import json

import pytest

import lrp_llm.analyses.evaluate as evaluate_module
from tui.cli import main


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "items.jsonl"
    lines = [
        {"id": "a", "context": "paris is in france", "question": "what country", "answer": "france"},
        {"id": "b", "text": "the capital of france is", "answer": "paris", "evidence": "france"},
        {"id": "c", "text": "one two three", "answer": "four"},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_evaluate_prints_the_table_and_writes_json_and_html(tiny_dir, data, tmp_path, capsys):
    out, page = tmp_path / "ev.json", tmp_path / "ev.html"
    args = ["evaluate", "--model", str(tiny_dir), "--data", str(data), "--methods", "attnlrp,ig:2,random"]
    code = main([*args, "--steps", "3", "--limit", "2", "--json", str(out), "--html", str(page), "--quiet"])
    assert code == 0
    d = json.loads(out.read_text())
    assert d["schema"] == "xai-tui/evaluation/1" and d["n_items"] == 2
    assert [s["method"] for s in d["summary"]] == ["attnlrp", "ig:2", "random"]
    assert all(s["n"] == 2 and isinstance(s["abpc"], float) for s in d["summary"])
    assert len(d["results"]) == 6 and d["meta"]["data"] == str(data)
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text and "http" not in text.split("<body>")[1]
    shown = capsys.readouterr().out
    assert "ABPC" in shown and "attnlrp" in shown and "ig:2" in shown, shown


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such data file"),
        ('{"text": "a", "answer": "b"}\n{oops\n', "items.jsonl line 2 is not valid JSON"),
        ('{"context": "c", "answer": "b"}\n', "needs 'question'"),
        ("\n", "holds no items"),
    ],
)
def test_bad_data_is_one_line_and_loads_no_model(tmp_path, capsys, content, message):
    path = tmp_path / "items.jsonl"
    if content is not None:
        path.write_text(content)
    # --model points nowhere: the data error must come first
    code = main(["evaluate", "--model", str(tmp_path / "missing"), "--data", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_options_are_one_line(tiny_dir, data, tmp_path, capsys):
    for extra, message in (
        (["--methods", "attnlrp,lime"], "unknown method 'lime'"),
        (["--methods", "mambalrp"], "not available for llama models"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--json", str(tmp_path / "no" / "x.json")], "does not exist"),
        (["--strategy", "neutral", "--neutral", "the a"], "pick one that is one token"),
    ):
        code = main(["evaluate", "--model", str(tiny_dir), "--data", str(data), "--quiet", *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, (extra, err)


def test_ctrl_c_exits_cleanly_without_half_files(tiny_dir, data, tmp_path, capsys, monkeypatch):
    real = evaluate_module.perturbation_curves_many
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "perturbation_curves_many", interrupted)
    out, page = tmp_path / "ev.json", tmp_path / "ev.html"
    code = main(
        ["evaluate", "--model", str(tiny_dir), "--data", str(data), "--json", str(out), "--html", str(page), "--quiet"]
    )
    assert code == 130 and "cancelled" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.jsonl"]  # no output, no temp file


@pytest.mark.parametrize("columns", [40, 200])
def test_every_number_is_printed_at_any_width(tiny_dir, data, tmp_path, capsys, monkeypatch, columns):
    # piped output is as wide as COLUMNS (80 unless set): a table that does not fit becomes one block per method
    monkeypatch.setenv("COLUMNS", str(columns))
    out = tmp_path / "ev.json"
    args = ["evaluate", "--model", str(tiny_dir), "--data", str(data), "--methods", "attnlrp,ig:2,random"]
    assert main([*args, "--steps", "3", "--limit", "2", "--json", str(out), "--quiet"]) == 0
    shown = capsys.readouterr().out
    assert "…" not in shown
    for s in json.loads(out.read_text())["summary"]:
        assert s["method"] in shown
        for key, digits in (("abpc", 3), ("abpc_ci", 3), ("abpc_prob", 3), ("morf_auc", 2), ("lerf_auc", 2)):
            assert f"{s[key]:.{digits}f}" in shown, (key, shown)
    table_header = "ABPC ± 95% CI" in shown.splitlines()[1]
    assert table_header == (columns == 200)


def test_progress_prints_lines_when_piped(tiny_dir, data, tmp_path, capsys):
    """stderr captured (not a terminal): the progress is plain lines, each stage reaching 100 %, no cursor codes."""
    args = ["evaluate", "--model", str(tiny_dir), "--data", str(data), "--methods", "attnlrp,random", "--steps", "2"]
    assert main([*args, "--json", str(tmp_path / "ev.json")]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "\x1b" not in err
    assert any(line.startswith("answering: 3/3 (100 %)") for line in lines)
    assert any(line.startswith("explaining (2 methods): 6/6 (100 %)") for line in lines)
    done = [line.split(": ")[1].split(" ")[0] for line in lines if line.startswith("explaining")]
    counts = [int(d.split("/")[0]) for d in done]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_quiet_prints_no_progress(tiny_dir, data, tmp_path, capsys):
    args = ["evaluate", "--model", str(tiny_dir), "--data", str(data), "--methods", "random", "--steps", "2"]
    assert main([*args, "--json", str(tmp_path / "ev.json"), "--quiet"]) == 0
    assert "answering" not in capsys.readouterr().err


def test_line_progress_prints_every_tenth_and_on_a_clock():
    import io

    from tui.render import LineProgress, TerminalConsole

    now = [0.0]
    console = TerminalConsole(file=io.StringIO(), width=100)
    bar = LineProgress(console=console, every=30.0, get_time=lambda: now[0])
    with bar:
        task = bar.add_task("work", total=1000)
        for i in range(1, 51):  # 5 % in 50 slow steps of 2 s: no tenth passed, but a line every 30 s
            now[0] += 2.0
            bar.update(task, completed=i)
        bar.update(task, completed=1000)
        bar.update(task, completed=1000)  # the end is printed once
    lines = console.file.getvalue().splitlines()
    assert lines[0].startswith("work: 0/1000 (0 %)")
    assert [line.split(":")[1].strip().split(" ")[0] for line in lines[1:-1]] == ["15/1000", "30/1000", "45/1000"]
    assert lines[-1].startswith("work: 1000/1000 (100 %), 0:01:40") and "left" not in lines[-1]
    assert lines[1].endswith("0:00:30, ~0:32:50 left")  # 15 of 1000 in 30 s: 985 more take 1970 s
