"""`xai-tui similarity`: the JSON contract, corpus mode, the HTML heatmap and one-line errors."""

import json

import numpy as np
import pytest

from lrp_llm.results.similarity import SimilarityExplanation
from synthetic_tasks.shared_nouns import VOCAB, make_tokenizer
from tests.support.encoders import tiny_encoder
from tui.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "tiny-bert"
    tiny_encoder(vocab=len(VOCAB)).save_pretrained(str(path))
    make_tokenizer().save_pretrained(str(path))
    return path


def test_pair_writes_the_json_contract_and_html(tiny_bert_dir, tmp_path, capsys):
    out, html = tmp_path / "s.json", tmp_path / "s.html"
    code = main(
        [
            "similarity",
            "--model",
            str(tiny_bert_dir),
            "--a",
            "the cat sees a <b>dog</b>",
            "--b",
            "a dog near the tree",
            "--json",
            str(out),
            "--html",
            str(html),
            "--quiet",
        ]
    )
    assert code == 0
    d = json.loads(out.read_text())
    assert d["tokens_a"] == ["[CLS]", "the", "cat", "sees", "a", "[UNK]", "[SEP]"]
    assert d["tokens_b"][0] == "[CLS]" and len(d["tokens_b"]) == 7
    m = np.asarray(d["interactions"])
    assert m.shape == (len(d["tokens_a"]), len(d["tokens_b"]))  # rows = a, columns = b
    assert d["interaction_sum"] == pytest.approx(m.sum(), rel=1e-9)
    assert -1.0 <= d["similarity"] <= 1.0 and isinstance(d["dot"], float) and d["seconds"] > 0
    assert d["method"] == "bilrp" and d["rules"] == "cp-lrp" and d["mode"] == "cosine"
    e = SimilarityExplanation.from_json(out.read_text())
    assert e.interactions.shape == m.shape
    printed = capsys.readouterr().out
    assert "top 8 interacting pairs" in printed and "cosine" in printed
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "&lt;b&gt;dog&lt;/b&gt;" in page and "<b>dog" not in page
    assert page.count("<tr><th") >= len(d["tokens_a"])


def test_corpus_mode_ranks_lines(tiny_bert_dir, tmp_path, capsys):
    corpus = tmp_path / "texts.txt"
    corpus.write_text("red car by the river\n\nthe cat sees a dog\na dog near the tree\n")
    out = tmp_path / "rank.json"
    code = main(
        [
            "similarity",
            "--model",
            str(tiny_bert_dir),
            "--a",
            "the cat sees a dog",
            "--b-file",
            str(corpus),
            "--method",
            "grad-x-input-products",
            "--json",
            str(out),
            "--show",
            "1",
            "--no-matrix",
            "--quiet",
        ]
    )
    assert code == 0
    d = json.loads(out.read_text())
    sims = [r["similarity"] for r in d["results"]]
    assert len(sims) == 3 and sims == sorted(sims, reverse=True)
    assert d["results"][0]["text_b"] == "the cat sees a dog" and sims[0] == pytest.approx(1.0)
    assert [r["meta"]["line"] for r in d["results"]][0] == 3  # the empty line is skipped, numbers kept
    assert all(r["method"] == "grad-x-input-products" for r in d["results"])
    assert "ranking by cosine similarity" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--a", "the cat", "--b-file", "/nonexistent/texts.txt"], "no such file"),
        (["--a", "  ", "--b", "a dog"], "empty"),
        (["--a", "the cat", "--b", "a dog", "--json", "/nonexistent/dir/o.json"], "does not exist"),
    ],
)
def test_errors_are_one_line(tiny_bert_dir, capsys, argv, message):
    code = main(["similarity", "--model", str(tiny_bert_dir), "--quiet", *argv])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_empty_corpus_file(tiny_bert_dir, tmp_path, capsys):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n  \n")
    assert main(["similarity", "--model", str(tiny_bert_dir), "--a", "the cat", "--b-file", str(corpus)]) == 2
    assert "no non-empty lines" in capsys.readouterr().err
