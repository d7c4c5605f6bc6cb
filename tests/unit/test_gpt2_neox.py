"""GPT-2 and GPT-NeoX (Pythia): fused Q/K/V projections whose rules sit where Q, K, V enter
transformers' attention function; LayerNorm with bias; plain GELU MLPs; NeoX's parallel block."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lrp_llm.archs.blocks import ATTENTION_FUNCTION
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.mechanism.context import lrp_rules
from patching import attribution_patching, sweep
from patching.sites import SiteMap
from patching.stepper import StepperUnsupported
from tests.support.models import random_ids
from tests.support.tiny_gpt import tiny_gpt, without_biases

TYPES = ("gpt2", "gpt_neox")
RULES = ("attnlrp", "cp-lrp", "relp")
IDS = torch.tensor([[3, 7, 1, 9, 4, 2, 8]])


def _attentions(model):
    return [m for m in model.modules() if hasattr(m, "c_attn") or hasattr(m, "query_key_value")]


def _fused(attn):
    return attn.c_attn if hasattr(attn, "c_attn") else attn.query_key_value


def _state(model):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    overrides = sum("forward" in m.__dict__ for m in model.modules())
    configs = [a.config is model.config for a in _attentions(model)]
    rule_attrs = sum("_lrp_attention_rules" in a.__dict__ for a in _attentions(model))
    return hooks, overrides, configs, rule_attrs, model.config._attn_implementation


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", TYPES)
def test_forward_unchanged_under_every_rule_set_and_restored(model_type, attn):
    model = tiny_gpt(model_type, attn=attn)
    with torch.no_grad():
        plain = model(IDS).logits
    before = _state(model)
    assert before[2] == [True, True] and before[3] == 0
    for rules in RULES:
        with lrp_rules(model, rules), torch.no_grad():
            # the rules are in place: every attention module calls the wrapper, the model's masks stay
            assert all(a.config._attn_implementation == ATTENTION_FUNCTION for a in _attentions(model))
            assert model.config._attn_implementation == attn
            torch.testing.assert_close(model(IDS).logits, plain, atol=1e-5, rtol=0)
        assert _state(model) == before
    with pytest.raises(RuntimeError, match="inside"):
        with lrp_rules(model, "attnlrp"):
            raise RuntimeError("inside")
    assert _state(model) == before
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, plain, atol=0, rtol=0)


@pytest.mark.parametrize("model_type", TYPES)
def test_a_second_model_sharing_the_config_is_untouched(model_type):
    first = tiny_gpt(model_type)
    second = type(first)(first.config).eval()  # transformers shares the config object between them
    second.load_state_dict(first.state_dict())
    assert second.config is first.config

    def input_gradient(model):
        embeds = model.get_input_embeddings()(IDS).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(inputs_embeds=embeds).logits[0, -1, 5], embeds)
        return grad

    plain = input_gradient(second)
    with lrp_rules(first, "attnlrp"):
        assert first.config._attn_implementation == "sdpa"
        assert all(a.config._attn_implementation == "sdpa" for a in _attentions(second))
        torch.testing.assert_close(input_gradient(second), plain, atol=0, rtol=0)
        assert not torch.allclose(input_gradient(first), plain, atol=1e-3)  # the rules do change the first


@pytest.mark.parametrize("model_type", TYPES)
def test_cp_lrp_conserves_the_logit_on_a_bias_free_copy(model_type):
    model = without_biases(tiny_gpt(model_type, dtype=torch.float64))
    if model_type == "gpt2":
        # GPT-2's learned position embedding is added to every token like a bias: without it,
        # all relevance reaches the token embeddings
        model.transformer.wpe.weight.data.zero_()
    out = relevance(model, random_ids(12), [8, 11], method="cp-lrp")
    for i in range(2):
        assert abs(float(out["relevance"][i].sum() / out["logits"][i]) - 1.0) < 1e-4


class _Recorder:
    """An attention function (registered under a test name) that keeps Q, K, V as they enter it."""

    name = "lrp_test_recorder"

    def __init__(self):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

        self.entered: list[tuple[torch.Tensor, ...]] = []
        sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

        def record(module, query, key, value, *args, **kwargs):
            query, key, value = (t.view_as(t) for t in (query, key, value))
            for t in (query, key, value):
                if t.requires_grad:  # CP-LRP hands the function detached Q and K
                    t.retain_grad()
            self.entered.append((query, key, value))
            return sdpa(module, query, key, value, *args, **kwargs)

        AttentionInterface.register(self.name, record)


@pytest.mark.parametrize(
    "rules,factors", [(None, (1.0, 1.0, 1.0)), ("attnlrp", (0.25, 0.25, 0.5)), ("cp-lrp", (0, 0, 1.0))]
)
@pytest.mark.parametrize("model_type", TYPES)
def test_q_k_v_get_their_share_where_they_enter_the_attention_function(model_type, rules, factors):
    """Per step: the relevance (x * grad) of Q, K, V at the fused projection's output is the
    factor times their relevance where they enter the attention function (V: element by element;
    Q, K per head and position, as NeoX rotates them in between, a linear map)."""
    model = tiny_gpt(model_type, dtype=torch.float64)
    recorder = _Recorder()
    ruled_config = copy.copy(model.config)
    ruled_config._attn_implementation_internal = recorder.name
    fused_out = []
    for attn in _attentions(model):
        attn.config = ruled_config  # this model's attention only; the model's masks stay SDPA's

        def keep(_m, _args, out):
            out.retain_grad()
            fused_out.append(out)

        _fused(attn).register_forward_hook(keep)
    with lrp_rules(model, rules) if rules else torch.enable_grad():
        embeds = model.get_input_embeddings()(IDS).detach().requires_grad_(True)
        model(inputs_embeds=embeds).logits[0, -1, 5].backward()
    H, hs = 4, 8
    for out, (q, k, v) in zip(fused_out, recorder.entered, strict=True):
        B, T = out.shape[:2]
        if model_type == "gpt2":  # [q | k | v], each (heads, head_size)
            parts = out.view(B, T, 3, H, hs).permute(2, 0, 3, 1, 4)
            grads = out.grad.view(B, T, 3, H, hs).permute(2, 0, 3, 1, 4)
        else:  # per head [q | k | v]
            parts = out.view(B, T, H, 3, hs).permute(3, 0, 2, 1, 4)
            grads = out.grad.view(B, T, H, 3, hs).permute(3, 0, 2, 1, 4)
        for i, (entered, factor) in enumerate(zip((q, k, v), factors, strict=True)):
            got = (parts[i] * grads[i]).sum(-1)  # (batch, heads, positions)
            entered_grad = torch.zeros_like(entered) if entered.grad is None else entered.grad
            want = factor * (entered * entered_grad).sum(-1)
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(grads[2], factors[2] * v.grad, atol=1e-12, rtol=0)
        assert v.grad.abs().max() > 1e-6 and (factors[0] == 0 or q.grad.abs().max() > 1e-6)


@pytest.mark.parametrize("model_type", TYPES)
def test_patching_sites_resolve_a_sweep_runs_and_relp_runs(model_type):
    model = tiny_gpt(model_type)
    sm = SiteMap(model)
    assert sm.family == model_type
    assert sm.n_layers == 2
    layer = sm.layers[0]
    neurons = layer.mlp.c_proj if model_type == "gpt2" else layer.mlp.dense_4h_to_h
    heads = layer.attn.c_proj if model_type == "gpt2" else layer.attention.dense
    assert sm.locate("layer.0.mlp.neuron.3").module is neurons
    assert sm.locate("layer.0.attn.head.2").module is heads
    assert sm.n_neurons == 48 and sm.n_heads == 4 and sm.head_dim == 8
    clean = random_ids(7, seed=4)
    corrupted = [*clean[:2], 9, *clean[3:]]
    kw = dict(kinds=("resid", "attn", "mlp", "head"), positions=[2, 6], head_positions=[5, 6])
    naive = sweep(model, clean, corrupted, 5, 6, engine="naive", **kw)
    fast = sweep(model, clean, corrupted, 5, 6, max_tokens=12, **kw)
    assert fast.engine == "batched"  # the layer stepper is not offered for these blocks
    for key, want in naive.values.items():
        np.testing.assert_allclose(fast.values[key], want, atol=1e-4, rtol=0, err_msg=str(key))
    with pytest.raises(StepperUnsupported):
        sweep(model, clean, corrupted, 5, 6, kinds=("resid",), engine="stepper")
    est = attribution_patching(model, clean, corrupted, 5, 6, method="relp", kinds=("resid", "mlp", "head"))
    for key, values in est.values.items():
        assert np.isfinite(values).all(), key
    assert np.abs(est.values[("resid", "logit_diff")] - est.reference.corrupted_logit_diff).max() > 1e-4
