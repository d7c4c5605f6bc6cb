"""``xai-tui patch`` end to end on a tiny random model with a word-level tokenizer, the
result's JSON round trip and the HTML report."""

import json

import numpy as np
import pytest

from lrp_llm.export.report import patching_report
from patching.result import Grid, PatchingResult
from tui.cli import main

WORDS = "the capital of france italy is paris rome <b>&amp; city".split()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    from tests.support.models import tiny_causal_lm

    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>")
    folder = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_causal_lm("llama", layers=2, vocab=len(vocab))
    model.config.model_type = "llama"
    model.save_pretrained(str(folder))
    fast.save_pretrained(str(folder))
    return folder


ARGS = ["--clean", "the capital of france is", "--corrupted", "the capital of italy is", "--answer", "paris"]


def test_patch_cli_writes_json_and_html(tiny_folder, tmp_path, capsys):
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    rc = main(
        ["patch", "--model", str(tiny_folder), *ARGS, "--wrong", "rome", "--sites", "resid,mlp,head"]
        + ["--direction", "both", "--json", str(out_json), "--html", str(out_html), "--quiet"]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "strongest sites" in printed and "Pearson" in printed
    data = json.loads(out_json.read_text())
    assert data["schema"] == "xai-tui/patching/1"
    kinds = {(g["kind"], g["method"], g["direction"], g["metric"]) for g in data["grids"]}
    assert ("resid", "sweep", "noise", "kl") in kinds and ("mlp", "relp", "denoise", "recovery") in kinds
    grid = next(g for g in data["grids"] if (g["kind"], g["method"], g["metric"]) == ("resid", "sweep", "recovery"))
    assert grid["rows"][1] == "layer.1.resid" and grid["axes"] == ["layer", "position"]
    assert grid["columns"][3] == "france/italy" and len(grid["values"]) == 2 and len(grid["values"][0]) == 5
    head = next(g for g in data["grids"] if g["kind"] == "head")
    assert head["columns"] == ["head.0", "head.1", "head.2", "head.3"]
    result = PatchingResult.load(out_json)
    assert result.grid("head", method="sweep").site(1, 2) == "layer.1.attn.head.2"
    assert len(result.correlations) == 2 * 3 * 2  # directions x sites x (relp, atp)
    html = out_html.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "layer.1.mlp" in html


def test_patch_cli_errors_are_one_line(tiny_folder, capsys):
    rc = main(
        ["patch", "--model", str(tiny_folder), *ARGS[:3], "the capital of the italy is", *ARGS[4:], "--wrong", "rome"]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "same number of tokens" in err
    assert main(["patch", "--model", str(tiny_folder), *ARGS, "--wrong", "paris"]) == 2
    assert "differ" in capsys.readouterr().err
    assert main(["patch", "--model", str(tiny_folder), *ARGS, "--wrong", "rome", "--sites", "resid,mixer"]) == 2
    assert "mixer" in capsys.readouterr().err
    assert main(["patch", "--model", str(tiny_folder), *ARGS, "--wrong", "rome", "--metrics", "acc"]) == 2


def test_patch_cli_ctrl_c_exits_cleanly_without_output(tiny_folder, tmp_path, monkeypatch, capsys):
    import patching.experiment

    def interrupted(*_a, progress=None, **_k):
        progress("sweep denoise", 3, 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(patching.experiment, "run_patching", interrupted)
    out_json = tmp_path / "r.json"
    rc = main(["patch", "--model", str(tiny_folder), *ARGS, "--wrong", "rome", "--json", str(out_json)])
    assert rc == 130 and not out_json.exists()
    assert capsys.readouterr().err.strip().endswith("cancelled")


def _result():
    tokens = ["<s>", "a<b>", "&c"]
    grid = Grid(
        "resid",
        "sweep",
        "denoise",
        "recovery",
        ["layer.0.resid", "layer.1.resid"],
        tokens,
        [[0.0, np.nan, 1.0], [0.5, -0.25, 1.0]],
        [0, 1, 2],
    )
    return PatchingResult(
        model="m<script>",
        clean_tokens=tokens,
        corrupted_tokens=tokens,
        clean_ids=[1, 2, 3],
        corrupted_ids=[1, 2, 4],
        answer=" x",
        wrong=" y",
        answer_id=5,
        wrong_id=6,
        baseline={
            "clean": {"logit_diff": 2.0, "p_answer": 0.5, "p_wrong": 0.1, "kl": 0.0},
            "corrupted": {"logit_diff": -1.0, "p_answer": 0.1, "p_wrong": 0.5, "kl": 1.0},
        },
        grids=[grid],
        correlations=[
            {"kind": "resid", "direction": "denoise", "method": "relp", "metric": "logit_diff", "pearson_r": 0.9}
        ],
    )


def test_result_json_round_trip_and_nan():
    r = _result()
    text = r.to_json()
    assert "NaN" not in text  # strict JSON: NaN is null
    back = PatchingResult.from_json(text)
    np.testing.assert_array_equal(back.grids[0].values, r.grids[0].values)
    assert back.grids[0].positions == [0, 1, 2] and back.baseline == r.baseline
    assert back.grid("resid").top(2, centre=0.0) == [(0, 2, 1.0), (1, 2, 1.0)]
    with pytest.raises(Exception, match="no grid"):
        back.grid("mlp")


def test_html_escapes_everything():
    html = patching_report(_result())
    assert "<script" not in html and "m&lt;script&gt;" in html
    assert "a&lt;b&gt;" in html and "&amp;c" in html
