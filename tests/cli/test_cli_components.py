"""`xai-tui explain --components`: the table per answer token and the components in the JSON."""

import json

import pytest

from tui.cli import main


def test_components_are_printed_and_written(tiny_dir, tmp_path, capsys):
    out = tmp_path / "c.json"
    args = ["explain", "--model", str(tiny_dir), "--prompt", "the capital of", "--target", "paris"]
    code = main([*args, "--method", "cp-lrp", "--components", "--json", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "components" in printed and "neurons" in printed and "attn.head." in printed
    d = json.loads(out.read_text())
    (t,) = d["targets"]
    c = t["components"]
    assert len(c["trace"]) == 3 and len(c["trace"][0]) == t["position"]  # embedding + 2 blocks
    assert len(c["heads"]) == 2 and len(c["heads"][0]) == 4
    assert len(c["neuron_index"][0]) == 16 and "neurons" not in c
    # the tiny checkpoint is float32: every layer carries the logit up to float32 rounding
    for row in c["trace"]:
        assert sum(row) == pytest.approx(t["logit"], rel=1e-3)


def test_components_with_a_method_without_them_is_one_line(tiny_dir, capsys):
    args = ["explain", "--model", str(tiny_dir), "--prompt", "the capital of", "--target", "paris"]
    code = main([*args, "--method", "saliency", "--components", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "gradient x input method" in err and len(err.splitlines()) == 1
