"""Mamba checkpoints: transformers layout and the original mamba-ssm layout (converted on load)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from lrp_llm.checkpoints.loading import inspect_checkpoint, load_model
from lrp_llm.checkpoints.mamba import hf_config
from lrp_llm.errors import CheckpointError, UnsupportedModelError
from tests.support.models import random_ids, tiny_tokenizer
from tests.support.tiny_mamba import MAMBA_FAMILIES, tiny_mamba

# mamba-ssm's own checkpoint layout exists for Mamba-1 and Mamba-2; Falcon-Mamba ships in transformers' layout
MAMBA_SSM_LAYOUTS = ("mamba", "mamba2")


def _mamba_ssm_config(family: str, vocab: int) -> dict:
    ssm = {"d_state": 4, "d_conv": 4, "expand": 2, "bias": False, "conv_bias": False}
    if family == "mamba":
        ssm["dt_rank"] = 4
    else:
        ssm.update(layer="Mamba2", headdim=8, ngroups=2, chunk_size=8)
    return {
        "d_model": 16,
        "n_layer": 2,
        "vocab_size": vocab,
        "ssm_cfg": ssm,
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 1,
        "tie_embeddings": False,
    }


def _save_mamba_ssm(model, folder, family, pickled=False):
    folder.mkdir()
    state = {}
    for k, v in model.state_dict().items():
        state[k.replace("backbone.embeddings.", "backbone.embedding.")] = v.clone().contiguous()
    (folder / "config.json").write_text(json.dumps(_mamba_ssm_config(family, model.config.vocab_size)))
    if pickled:
        torch.save(state, folder / "pytorch_model.bin")
    else:
        save_file(state, str(folder / "model.safetensors"))
    tiny_tokenizer().save_pretrained(str(folder))
    return folder


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]), use_cache=False).logits


@pytest.mark.parametrize("family", MAMBA_FAMILIES)
def test_transformers_layout_loads(tmp_path, family):
    model = tiny_mamba(family, vocab=len(tiny_tokenizer()))
    model.save_pretrained(str(tmp_path))
    tiny_tokenizer().save_pretrained(str(tmp_path))
    loaded, _ = load_model(tmp_path)
    ids = random_ids(20)
    assert torch.equal(_logits(loaded, ids), _logits(model, ids))


@pytest.mark.parametrize("family", MAMBA_SSM_LAYOUTS)
def test_mamba_ssm_layout_is_converted(tmp_path, family):
    model = tiny_mamba(family, vocab=len(tiny_tokenizer()))
    folder = _save_mamba_ssm(model, tmp_path / "ckpt", family)
    ckpt = inspect_checkpoint(folder)
    assert ckpt.format == "mamba-ssm" and ckpt.model_type == family
    loaded, tokenizer = load_model(folder)
    assert loaded.config.model_type == family
    ids = random_ids(20)
    assert torch.equal(_logits(loaded, ids), _logits(model, ids))
    assert len(tokenizer) == len(tiny_tokenizer())


def test_pickled_mamba_ssm_weights_need_the_flag(tmp_path):
    model = tiny_mamba("mamba", vocab=len(tiny_tokenizer()))
    folder = _save_mamba_ssm(model, tmp_path / "ckpt", "mamba", pickled=True)
    with pytest.raises(CheckpointError, match="pickled"):
        load_model(folder)
    loaded, _ = load_model(folder, allow_pickle=True)
    ids = random_ids(12)
    assert torch.equal(_logits(loaded, ids), _logits(model, ids))


def test_pickle_is_read_with_weights_only(tmp_path):
    """A pickle that would run code on load is refused even with --allow-pickle."""
    model = tiny_mamba("mamba", vocab=len(tiny_tokenizer()))
    folder = _save_mamba_ssm(model, tmp_path / "ckpt", "mamba", pickled=True)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["evil"] = Evil()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError):
        load_model(folder, allow_pickle=True)


def test_config_translation_of_a_mamba_130m_config():
    config = {
        "d_model": 768,
        "n_layer": 24,
        "vocab_size": 50277,
        "ssm_cfg": {},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 8,
    }
    hf = hf_config(config)
    assert hf.model_type == "mamba"
    assert (hf.hidden_size, hf.num_hidden_layers, hf.vocab_size) == (768, 24, 50280)
    assert (hf.state_size, hf.time_step_rank, hf.intermediate_size, hf.conv_kernel) == (16, 48, 1536, 4)
    assert hf.tie_word_embeddings
    m2 = hf_config({**config, "ssm_cfg": {"layer": "Mamba2"}})
    assert m2.model_type == "mamba2" and (m2.num_heads, m2.head_dim, m2.state_size) == (24, 64, 128)


def test_hybrid_and_layernorm_checkpoints_are_refused():
    base = {"d_model": 64, "n_layer": 2, "vocab_size": 100}
    with pytest.raises(UnsupportedModelError, match="attention"):
        hf_config({**base, "attn_layer_idx": [1]})
    with pytest.raises(UnsupportedModelError, match="LayerNorm"):
        hf_config({**base, "rms_norm": False})


def test_mismatched_weights_are_a_one_line_error(tmp_path):
    model = tiny_mamba("mamba", vocab=len(tiny_tokenizer()))
    folder = _save_mamba_ssm(model, tmp_path / "ckpt", "mamba")
    config = json.loads((folder / "config.json").read_text())
    config["n_layer"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(folder)


@pytest.mark.parametrize("family", MAMBA_SSM_LAYOUTS)
def test_cli_explain_works_on_the_mamba_ssm_layout(tmp_path, family):
    from tui.cli import main

    model = tiny_mamba(family, vocab=len(tiny_tokenizer()))
    folder = _save_mamba_ssm(model, tmp_path / "ckpt", family)
    out = tmp_path / "a.json"
    code = main(
        ["explain", "--model", str(folder), "--prompt", "the capital of france is", "--generate", "2"]
        + ["--json", str(out), "--quiet", "--heatmap", "none"]
    )
    assert code == 0
    d = json.loads(out.read_text())
    assert d["method"] == "mambalrp" and len(d["targets"]) >= 1
    for t in d["targets"]:
        assert len(t["relevance"]) == t["position"]
        assert "longrange" in t and t["longrange"]["bins"]
