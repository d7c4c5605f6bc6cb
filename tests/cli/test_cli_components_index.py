"""`xai-tui components index` and `xai-tui components top`: build, resume, print snippets as data."""

from __future__ import annotations

import pytest

from tui.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "c.txt"
    # a control character in the data must reach the terminal visibly, never as an escape sequence
    path.write_text("the capital of france is paris\nthe river \x1b]0;x\x07 of rome is old\nparis is big\n" * 4)
    return path


def _index(tiny_dir, corpus, db, *extra):
    base = ["components", "index", "--model", str(tiny_dir), "--corpus", str(corpus), "--db", str(db)]
    return main([*base, "--layer", "1", "--kind", "neuron", "--window", "8", "--top-n", "3", "--quiet", *extra])


def test_index_resumes_and_top_prints_marked_snippets(tiny_dir, corpus, tmp_path, capsys):
    db = tmp_path / "i.sqlite"
    assert _index(tiny_dir, corpus, db, "--limit", "2") == 0
    assert "indexed 2 of " in capsys.readouterr().out
    assert _index(tiny_dir, corpus, db) == 0
    out = capsys.readouterr().out
    assert "(2 already done)" in out
    assert main(["components", "top", "layer.1.mlp.neuron.5", "--db", str(db), "-k", "2", "--by", "activation"]) == 0
    printed = capsys.readouterr().out
    assert "layer.1.mlp.neuron.5 by activation" in printed and "⟦" in printed and "⟧" in printed
    assert "\x1b" not in printed and "\x07" not in printed


def test_top_of_an_unindexed_site_and_a_missing_corpus_are_one_line(tiny_dir, corpus, tmp_path, capsys):
    db = tmp_path / "i.sqlite"
    assert _index(tiny_dir, corpus, db, "--limit", "1") == 0
    capsys.readouterr()
    for argv, words in [
        (["components", "top", "layer.0.attn.head.1", "--db", str(db)], "not indexed"),
        (["components", "top", "layer.0.mlp.nerve", "--db", str(db)], "unknown site"),
        (["components", "top", "layer.1.mlp.neuron.1", "--db", str(tmp_path / "none.sqlite")], "no index"),
    ]:
        assert main(argv) != 0
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, argv
    code = main(["components", "index", "--corpus", str(tmp_path / "missing.txt"), "--layer", "0", "--kind", "head"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "does not exist" in err and len(err.splitlines()) == 1


def test_the_benchmark_runs_end_to_end_on_a_tiny_model(tiny_dir, tmp_path):
    from benchmarks import corpus_index as bench

    path = bench.main(
        ["--model", str(tiny_dir), "--layer", "1", "--limit", "2", "--window", "16", "--out", str(tmp_path)]
    )
    text = path.read_text()
    assert "| windows processed (of the corpus) | 2 of " in text and "open to first snippet" in text
