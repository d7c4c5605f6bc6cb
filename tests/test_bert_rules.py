"""BERT-style encoder rules: each primitive against a hand-written formula, forward unchanged,
model restored (also on error), CP-LRP replay equal to forward mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import jvp

from lrp_llm.archs import get_arch
from lrp_llm.archs.bert import (
    bert_parts,
    identity_jacobian,
    install_cp_lrp_replay,
    layer_norm_jacobian,
    scaled_jacobian,
    token_input_norm,
)
from lrp_llm.context import lrp_rules
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.patch import ModelPatch
from lrp_llm.rules import layer_norm_detached
from tests.encoders import ENCODER_TYPES, encoder_ids, tiny_encoder, torch_threads


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


# ----------------------------------------------------------------- primitives
def test_scaled_jacobian_value_and_both_modes():
    x = torch.randn(3, 5, dtype=torch.float64)
    v = torch.randn(3, 5, dtype=torch.float64)
    y, ty = jvp(lambda t: scaled_jacobian(t, 0.25), (x,), (v,))
    assert torch.equal(y, x)
    assert torch.allclose(ty, 0.25 * v)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(scaled_jacobian(xr, 0.25), xr, v)
    assert torch.allclose(g, 0.25 * v)


def test_identity_jacobian_is_f_over_x_in_both_modes():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.7], dtype=torch.float64)
    f = nn.functional.gelu
    expected = torch.where(x == 0, torch.zeros_like(x), f(x) / x)  # f(0) = 0: the stabilised ratio is 0
    y, ty = jvp(lambda t: identity_jacobian(t, f(t.detach())), (x,), (torch.ones_like(x),))
    assert torch.equal(y, f(x))
    assert torch.allclose(ty, expected)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(identity_jacobian(xr, f(xr)).sum(), xr)
    assert torch.allclose(g, expected)
    # relevance passes unchanged: x * grad == f(x) * 1
    assert torch.allclose(x * g, f(x))


def test_layer_norm_jacobian_matches_formula_and_module():
    torch.manual_seed(0)
    ln = nn.LayerNorm(6, eps=1e-5).double()
    with torch.no_grad():
        ln.weight.normal_(1, 0.3)
        ln.bias.normal_(0, 0.3)
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    out = layer_norm_jacobian(x, ln.weight, ln.bias, ln.eps)
    assert torch.allclose(out, ln(x), atol=1e-12)
    assert torch.allclose(out, layer_norm_detached(x, ln.weight, ln.bias, ln.eps), atol=1e-12)
    # hand-written: d out / d x with 1/std constant is (I - 1/d) * inv * diag(w)
    g = torch.randn_like(x)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(layer_norm_jacobian(xr, ln.weight, ln.bias, ln.eps), xr, g)
    inv = 1 / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + ln.eps)
    gw = g * ln.weight
    assert torch.allclose(grad, (gw - gw.mean(-1, keepdim=True)) * inv)
    _, tangent = jvp(lambda t: layer_norm_jacobian(t, ln.weight, ln.bias, ln.eps), (x,), (g,))
    assert torch.allclose(tangent, (g - g.mean(-1, keepdim=True)) * inv * ln.weight)


# --------------------------------------------------------------- whole model
@pytest.mark.parametrize("model_type", ENCODER_TYPES)
@pytest.mark.parametrize("rules", ["cp-lrp", "attnlrp"])
def test_forward_unchanged_under_rules_and_restored(model_type, rules):
    model = tiny_encoder(model_type)
    assert get_arch(model).kind == "encoder"
    ids = torch.tensor([encoder_ids(9)])
    with torch.no_grad():
        ref = model(input_ids=ids).last_hidden_state
        with lrp_rules(model, rules):
            patched = model(input_ids=ids).last_hidden_state
        after = model(input_ids=ids).last_hidden_state
    assert (patched - ref).abs().max() <= 1e-5
    assert torch.equal(after, ref)
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_model_restored_on_error_and_second_model_untouched():
    model, other = tiny_encoder(seed=0), tiny_encoder(seed=1)
    ids = torch.tensor([encoder_ids(7)])
    with torch.no_grad():
        ref_other = other(input_ids=ids).last_hidden_state
    with pytest.raises(RuntimeError, match="boom"):
        with lrp_rules(model, "cp-lrp"):
            with torch.no_grad():
                assert torch.equal(other(input_ids=ids).last_hidden_state, ref_other)
            raise RuntimeError("boom")
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert not any(m._forward_hooks for m in model.modules())
    assert model.training is False


@pytest.mark.parametrize("rules,expect_grad", [("cp-lrp", False), ("attnlrp", True)])
def test_cp_lrp_gives_no_relevance_through_attention_scores(rules, expect_grad):
    """CP-LRP: the query and key projections see a detached input, so no relevance reaches the
    input through the attention probabilities; AttnLRP keeps that path (scaled)."""
    model = tiny_encoder(dtype=torch.float64)
    for p in model.parameters():
        p.requires_grad_(False)
    attn = bert_parts(model)["attentions"][0]
    seen = {}

    def grab(name):
        def hook(_m, _args, out):
            seen[name] = out.requires_grad

        return hook

    ids = torch.tensor([encoder_ids(6)])
    with lrp_rules(model, rules) as patch:
        patch.hook_output(attn.query, grab("q"))
        patch.hook_output(attn.key, grab("k"))
        patch.hook_output(attn.value, grab("v"))
        x = model.embeddings.word_embeddings(ids).detach().requires_grad_(True)
        model(inputs_embeds=x)
    assert seen == {"q": expect_grad, "k": expect_grad, "v": True}


@pytest.mark.parametrize("one_token_rows", [False, True])
def test_replay_row0_is_the_forward_pass_and_rows_are_jvp_columns(one_token_rows):
    model = tiny_encoder(dtype=torch.float64)
    ids = torch.tensor([encoder_ids(8)])
    norm = token_input_norm(model)
    captured = []
    h = norm.register_forward_pre_hook(lambda _m, a: captured.append(a[0].detach()))
    with torch.no_grad():
        ref = model(input_ids=ids).last_hidden_state
    h.remove()
    x0 = captured[0]
    n = x0.shape[1]
    # forward mode under the CP-LRP rules: column i = J~ x_i
    with lrp_rules(model, "cp-lrp"):
        swap = {}
        h = norm.register_forward_pre_hook(lambda _m, a: (swap["x"],))

        def f(x):
            swap["x"] = x
            return model(input_ids=ids).last_hidden_state

        cols = []
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.MATH]):
            for i in range(n):
                t = torch.zeros_like(x0)
                t[0, i] = x0[0, i]
                cols.append(jvp(f, (x0,), (t,))[1][0])
        h.remove()
    with ModelPatch(model) as patch:
        install_cp_lrp_replay(patch, model, one_token_rows=one_token_rows)
        assert ("forward" in model.encoder.layer[0].__dict__) == one_token_rows
        batch = torch.zeros(n + 1, n, x0.shape[-1], dtype=x0.dtype)
        batch[0] = x0[0]
        batch[1 + torch.arange(n), torch.arange(n)] = x0[0]
        h = norm.register_forward_pre_hook(lambda _m, a: (batch,))
        with torch.no_grad():
            out = model(input_ids=ids.expand(n + 1, -1)).last_hidden_state
        h.remove()
    assert (out[0] - ref[0]).abs().max() < 1e-10
    for i in range(n):
        assert (out[1 + i] - cols[i]).abs().max() < 1e-10
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_unsupported_layout_is_one_line_error():
    model = tiny_encoder()
    model.encoder.layer[0].intermediate.intermediate_act_fn = None
    del model.encoder.layer[0].intermediate.intermediate_act_fn
    with pytest.raises(UnsupportedModelError, match="layout is not supported"):
        with lrp_rules(model, "cp-lrp"):
            pass
    assert not any("forward" in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_pooled_replay_equals_pooling_the_per_position_replay(pooling):
    from lrp_llm.archs.bert import _last_output

    model = tiny_encoder(dtype=torch.float64)
    ids = torch.tensor([encoder_ids(9)])
    norm = token_input_norm(model)
    captured = []
    h = norm.register_forward_pre_hook(lambda _m, a: captured.append(a[0].detach()))
    with torch.no_grad():
        model(input_ids=ids)
    h.remove()
    x0 = captured[0]
    n = x0.shape[1]
    batch = torch.zeros(n + 1, n, x0.shape[-1], dtype=x0.dtype)
    batch[0] = x0[0]
    batch[1 + torch.arange(n), torch.arange(n)] = x0[0]
    pick = {"mean": lambda t: t.mean(1), "cls": lambda t: t[:, 0], "last": lambda t: t[:, -1]}[pooling]
    outs = []
    for pooled in (None, pooling):
        with ModelPatch(model) as patch:
            install_cp_lrp_replay(patch, model, pooling=pooled)
            assert ("forward" in _last_output(model).__dict__) == (pooled is not None)
            h = norm.register_forward_pre_hook(lambda _m, a: (batch,))
            with torch.no_grad():
                outs.append(pick(model(input_ids=ids.expand(n + 1, -1)).last_hidden_state))
            h.remove()
    assert (outs[0] - outs[1]).abs().max() < 1e-12
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_first_layer_shortcut_falls_back_when_rows_hold_several_tokens():
    model = tiny_encoder(dtype=torch.float64)
    ids = torch.tensor([encoder_ids(7)])
    norm = token_input_norm(model)
    g = torch.Generator().manual_seed(3)
    batch = torch.randn(4, 7, model.config.hidden_size, generator=g, dtype=torch.float64)
    batch[2, 1:] = 0.0  # one row with a single token, the others dense: not the BiLRP layout
    outs = []
    for flag in (False, True):
        with ModelPatch(model) as patch:
            install_cp_lrp_replay(patch, model, one_token_rows=flag)
            h = norm.register_forward_pre_hook(lambda _m, a: (batch,))
            with torch.no_grad():
                outs.append(model(input_ids=ids.expand(4, -1)).last_hidden_state)
            h.remove()
    assert torch.equal(outs[0], outs[1])
