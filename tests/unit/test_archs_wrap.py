"""Wrapper checkpoints whose text model is registered (Qwen3.5, Qwen3.5-MoE, Llama-4), and the types of
this slice that are refused: each refusal names the part without a rule."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from lrp_llm.errors import UnsupportedModelError
from tests.support.conformance import without_biases_and_position_embeddings
from tests.support.models import random_ids, tiny_tokenizer
from tests.support.tiny_any import tiny_config


@pytest.mark.parametrize(
    "model_type,text_type",
    [
        ("qwen3_5", "qwen3_5_text"),
        ("qwen3_5_moe", "qwen3_5_moe_text"),
        ("llama4", "llama4_text"),
        ("mllama", "mllama_text_model"),
    ],
)
def test_a_wrapper_checkpoint_loads_its_text_model_and_explains_text(tmp_path, model_type, text_type):
    from transformers import AutoModelForImageTextToText

    from lrp_llm.checkpoints.loading import load_model
    from lrp_llm.engines.causal_lm import relevance

    torch.manual_seed(0)
    wrapper = AutoModelForImageTextToText.from_config(tiny_config(model_type)).eval()
    wrapper.save_pretrained(str(tmp_path))
    tiny_tokenizer().save_pretrained(str(tmp_path))

    model, _ = load_model(tmp_path, dtype="float64")
    assert model.config.model_type == text_type
    # the text model's weights are the checkpoint's (not a fresh init): the wrapper's text model's, renamed
    text = next(m for m in wrapper.modules() if type(m) is type(model.model)).state_dict()
    loaded = model.model.state_dict()
    assert text.keys() == loaded.keys()
    for name, w in text.items():
        torch.testing.assert_close(loaded[name], w.to(torch.float64), msg=name)
    torch.testing.assert_close(model.lm_head.weight, wrapper.get_output_embeddings().weight.to(torch.float64))

    without_biases_and_position_embeddings(model)
    out = relevance(model, random_ids(9), [5, 8], method="cp-lrp")
    for i in range(2):
        assert abs(float(out["relevance"][i].sum() / out["logits"][i]) - 1.0) < 1e-4


REFUSED = [
    ("qwen4_exp", "Qwen4ExpTextGatedResidual"),
    ("qwen4_exp_text", "Qwen4ExpTextGatedResidual"),
    ("zaya", "ZayaCCAProjection"),
    ("jetmoe", "JetMoeMoA"),
    ("minimax", "MiniMaxLightningAttention"),
    ("zamba", "ZambaMambaMixer"),
    ("dbrx", "DbrxExperts"),
    ("minimax_m3_vl_text", "MiniMaxM3VLDenseMLP"),
    ("minimax_m3_vl", "MiniMaxM3VLDenseMLP"),
]


@pytest.mark.parametrize("model_type,part", REFUSED)
def test_refused_types_name_the_part_without_a_rule(model_type, part):
    from lrp_llm.archs import get_arch

    model = nn.Module()
    model.config = types.SimpleNamespace(model_type=model_type, is_encoder_decoder=False)
    with pytest.raises(
        UnsupportedModelError, match=rf"^unsupported architecture '{model_type}' \(.*{part}.* no LRP rule"
    ):
        get_arch(model)


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_lfm3s_attention_output_gate_is_held_or_halved_like_an_ungated_attentions_output(rules):
    # o_proj(attn * sigmoid(g_proj(x))) per head: under CP-LRP the gate is held (no gradient) and the attention
    # output keeps the factors of the same model without gates; under AttnLRP and RelP the gate's gradient is
    # half the plain one and the attention output's factors (on Q, K, V) half the ungated model's
    from lrp_llm.mechanism.context import lrp_rules
    from tests.support.tiny_any import tiny_model

    gated = tiny_model("lfm3", dtype=torch.float64)
    ungated = tiny_model("lfm3", dtype=torch.float64, use_attention_gate=False)
    attentions = [layer.self_attn for layer in gated.model.layers if hasattr(layer, "self_attn")]
    plain_attentions = [layer.self_attn for layer in ungated.model.layers if hasattr(layer, "self_attn")]
    assert len(attentions) == 2 and all(a.g_proj is None for a in plain_attentions)
    x = torch.randn(3, 32, dtype=torch.float64)
    with lrp_rules(ungated, rules):
        want = [a._lrp_attention_rules[1:4] for a in plain_attentions]
    with lrp_rules(gated, rules):
        for attn, factors in zip(attentions, want, strict=True):
            y = attn.g_proj(x)
            if rules == "cp-lrp":
                assert not y.requires_grad and attn._lrp_attention_rules[1:4] == factors
            else:
                upstream = torch.randn_like(y)
                (grad,) = torch.autograd.grad(y, attn.g_proj.weight, upstream)
                torch.testing.assert_close(grad, 0.5 * upstream.T @ x)
                assert attn._lrp_attention_rules[1:4] == tuple(None if f is None else 0.5 * f for f in factors)
    assert not any(m._forward_hooks for m in gated.modules())  # restored
