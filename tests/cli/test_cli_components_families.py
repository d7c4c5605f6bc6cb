"""`xai-tui components` on a tiny Mamba-2 (SSM heads), a tiny mixture-of-experts model (experts) and a tiny
hybrid (Nemotron-H: blocks with different parts): the printed numbers and the JSON are the library's."""

import json

import numpy as np
import pytest

from tui.cli import main

PROMPT = ["--prompt", "the capital of", "--target", "paris", "--quiet"]


def _checkpoint(tmp_path_factory, model_type: str):
    from tests.support.models import tiny_tokenizer
    from tests.support.tiny_any import tiny_model
    from tests.support.tiny_mamba import tiny_mamba

    tok = tiny_tokenizer()
    model = tiny_mamba("mamba2", vocab=len(tok)) if model_type == "mamba2" else tiny_model(model_type)
    path = tmp_path_factory.mktemp(model_type) / model_type
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def _library(path):
    from lrp_llm.checkpoints.loading import load_model
    from lrp_llm.engines.explain import explain

    model, tok = load_model(str(path))
    return model, explain(model, tok, "the capital of", target="paris", components=True)


def _run(capsys, path, *extra) -> str:
    assert main(["components", "--model", str(path), *PROMPT, *extra]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("model_type", ["mamba2", "mixtral", "granitemoehybrid"])
def test_ssm_heads_and_experts_are_listed_and_selectable(tmp_path_factory, tmp_path, capsys, model_type):
    from lrp_llm.analyses.components import component_sites, conditional_relevance

    path = _checkpoint(tmp_path_factory, model_type)
    model, a = _library(path)
    t = a.targets[0]
    c = t.components
    kind, heading = ("ssm-head", "SSM heads") if model_type == "mamba2" else ("expert", "Experts")
    site = c.top_components(kind, 1)[0].site
    out = tmp_path / "c.json"
    printed = _run(capsys, path, "--select", site, "--json", str(out), "--top", "3")
    assert heading in printed
    for s, v in c.top_components(kind, 3):
        assert f"{s} {v:+.4f}" in printed
    assert f"conditional heatmap of {site}" in printed
    selection = component_sites(model, c, site)
    if model_type == "mamba2":  # an SSM head: its 8 channels
        layer, head = int(site.split(".")[1]), int(site.split(".")[-1])
        assert selection == [f"layer.{layer}.mixer.channel.{k}" for k in range(8 * head, 8 * head + 8)]
    want = conditional_relevance(model, a.input_ids[: t.position + 1], t.position, [selection], method=a.method)
    np.testing.assert_allclose(json.loads(out.read_text())["conditional"], want.heatmaps[0].relevance, rtol=1e-5)


def test_hybrid_layer_table_shows_each_blocks_parts(tmp_path_factory, capsys):
    path = _checkpoint(tmp_path_factory, "nemotron_h")
    _, a = _library(path)
    c = a.targets[0].components
    printed = _run(capsys, path)
    rows = {line.split("│")[0].strip(): [x.strip() for x in line.split("│")[1:]] for line in printed.splitlines()}
    # columns: block output, attention, MLP, mixer; "—" where the block has no such part
    assert rows["layer 0"][1:4] == ["—", "—", f"{c.mixer[0]:+.4f}"]
    assert rows["layer 1"][1:4] == [f"{c.attn[1]:+.4f}", "—", "—"]
    assert rows["layer 2"][1:4] == ["—", f"{c.mlp[2]:+.4f}", "—"]
    assert rows["layer 3"][1:4] == ["—", f"{c.mlp[3]:+.4f}", "—"]  # the MoE block's output
    for listed in ("layer.1.attn.head.", "layer.2.mlp.neuron.", "layer.0.mixer.channel.", "layer.0.mixer.ssm_head."):
        assert listed in printed, listed
    assert "layer.3.mlp.expert." in printed or "layer.3.mlp.shared_expert" in printed


def test_an_unknown_ssm_head_is_one_line(tmp_path_factory, capsys):
    path = _checkpoint(tmp_path_factory, "mamba2")
    code = main(["components", "--model", str(path), *PROMPT, "--select", "layer.0.mixer.ssm_head.9"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "SSM head 9 is out of range 0..3" in err and len(err.splitlines()) == 1, err
