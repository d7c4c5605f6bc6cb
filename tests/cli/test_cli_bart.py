"""`xai-tui explain` on a saved tiny BART folder: source + decoder relevance that conserves under CP-LRP."""

import json

import pytest

from synthetic_tasks import copy_reverse
from tests.support.tiny_bart import tiny_seq2seq, without_biases_and_positions
from tui.cli import main


@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "bart"
    tok = copy_reverse.make_tokenizer()
    model = tiny_seq2seq("bart", vocab_size=len(tok), eos_token_id=1, bos_token_id=1, forced_eos_token_id=None)
    without_biases_and_positions(model).save_pretrained(str(path))  # bias-free: CP-LRP conserves exactly
    tok.save_pretrained(str(path))
    return path


def test_bart_json_keeps_source_and_decoder_apart(bart_dir, tmp_path, capsys):
    out = tmp_path / "b.json"
    code = main(["explain", "--model", str(bart_dir), "--prompt", "reverse a b c", "--target", "c b a",
                 "--method", "cp-lrp", "--json", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    d = json.loads(out.read_text())
    assert d["source_tokens"] == ["reverse", "a", "b", "c", "</s>"]
    assert d["tokens"] == ["<pad>", "c", "b", "a"] and d["prompt_length"] == 1
    for t in d["targets"]:
        assert len(t["source_relevance"]) == len(d["source_tokens"]) and len(t["relevance"]) == t["position"]
        assert t["conservation"] == pytest.approx(1.0, abs=1e-3)
    shown = capsys.readouterr().out
    assert "source" in shown and "decoder" in shown


def test_bart_generate(bart_dir, tmp_path):
    out = tmp_path / "g.json"
    assert main(["explain", "--model", str(bart_dir), "--prompt", "copy d e", "--generate", "3",
                 "--json", str(out), "--quiet", "--heatmap", "none"]) == 0  # fmt: skip
    d = json.loads(out.read_text())
    assert 1 <= len(d["targets"]) <= 3 and d["method"] == "attnlrp"
