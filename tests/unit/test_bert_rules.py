"""BERT-style encoder rules: each primitive against a hand-written formula, forward unchanged,
model restored (also on error), CP-LRP replay equal to forward mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import jvp

from lrp_llm.archs import get_arch
from lrp_llm.archs.bert import BERT_PARTS, cp_lrp_replay, replay_layers, token_input_norm
from lrp_llm.archs.blocks import find_parts
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.mechanism.primitives import identity_jacobian, layer_norm_detached, layer_norm_jacobian, scaled_jacobian
from tests.support.encoders import ENCODER_TYPES, encoder_ids, tiny_encoder

pytestmark = pytest.mark.usefixtures("one_thread")


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
    attn = find_parts(model, BERT_PARTS)["attentions"][0]
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


def _token_inputs(model, ids):
    """The embedding LayerNorm's input (1, n, d) and the last hidden states of the plain model."""
    norm = token_input_norm(model)
    captured = []
    h = norm.register_forward_pre_hook(lambda _m, a: captured.append(a[0].detach()))
    with torch.no_grad():
        ref = model(input_ids=ids).last_hidden_state
    h.remove()
    return captured[0], ref


def _jvp_columns(model, ids, x0):
    """Column i: the forward-mode product under the CP-LRP rules with tangent x_i (token i alone)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    norm = token_input_norm(model)
    with lrp_rules(model, "cp-lrp"):
        swap = {}
        h = norm.register_forward_pre_hook(lambda _m, a: (swap["x"],))

        def f(x):
            swap["x"] = x
            return model(input_ids=ids).last_hidden_state

        cols = []
        with sdpa_kernel([SDPBackend.MATH]):
            for i in range(x0.shape[1]):
                t = torch.zeros_like(x0)
                t[0, i] = x0[0, i]
                cols.append(jvp(f, (x0,), (t,))[1][0])
        h.remove()
    return torch.stack(cols)


@pytest.mark.parametrize("chunk", [64, 3])
def test_replay_output_is_the_forward_pass_and_rows_are_jvp_columns(chunk):
    model = tiny_encoder(dtype=torch.float64, layers=3)
    ids = torch.tensor([encoder_ids(8)])
    x0, ref = _token_inputs(model, ids)
    cols = _jvp_columns(model, ids, x0)
    out, rows = cp_lrp_replay(model, x0[0], pooling=None, chunk=chunk)
    assert rows.shape == (8, 8, model.config.hidden_size)
    assert (out - ref[0]).abs().max() < 1e-10
    assert (rows - cols).abs().max() < 1e-10
    assert not any("forward" in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_pooled_replay_equals_pooling_the_per_position_replay(pooling, layers):
    model = tiny_encoder(dtype=torch.float64, layers=layers)
    ids = torch.tensor([encoder_ids(9)])
    x0, ref = _token_inputs(model, ids)
    pick = {"mean": lambda t: t.mean(-2), "cls": lambda t: t[..., 0, :], "last": lambda t: t[..., -1, :]}[pooling]
    out, rows = cp_lrp_replay(model, x0[0], pooling=None)
    phi, pooled = cp_lrp_replay(model, x0[0], pooling=pooling, chunk=4)
    assert (phi - pick(ref[0])).abs().max() < 1e-10
    assert (pooled - pick(rows)).abs().max() < 1e-12


def test_replay_sees_weights_changed_in_place():
    """Products of weights kept between calls are recomputed when a weight changes or is replaced."""
    model = tiny_encoder(dtype=torch.float64)
    ids = torch.tensor([encoder_ids(6)])
    x0, _ = _token_inputs(model, ids)
    cp_lrp_replay(model, x0[0], pooling=None)
    with torch.no_grad():
        model.encoder.layer[0].attention.self.query.weight.mul_(1.5)
        model.encoder.layer[0].intermediate.dense.weight.mul_(-0.5)
        model.encoder.layer[1].attention.self.key.weight.add_(0.2)
    x0, ref = _token_inputs(model, ids)
    out, rows = cp_lrp_replay(model, x0[0], pooling=None)
    assert (out - ref[0]).abs().max() < 1e-10
    assert (rows - _jvp_columns(model, ids, x0)).abs().max() < 1e-10
    # a weight replaced by a new parameter
    attn = model.encoder.layer[0].attention.self
    attn.key.weight = nn.Parameter(attn.key.weight.detach() * 0.7)
    x0, ref = _token_inputs(model, ids)
    out, rows = cp_lrp_replay(model, x0[0], pooling=None)
    assert (out - ref[0]).abs().max() < 1e-10
    assert (rows - _jvp_columns(model, ids, x0)).abs().max() < 1e-10


def test_replay_refuses_layouts_it_does_not_compute():
    model = tiny_encoder(dtype=torch.float64)
    assert replay_layers(model) is not None
    x0, _ = _token_inputs(model, torch.tensor([encoder_ids(8)]))
    model.encoder.layer[1].chunk_size_feed_forward = 4
    assert replay_layers(model) is None
    with pytest.raises(UnsupportedModelError, match="use forward mode"):
        cp_lrp_replay(model, x0[0])


def test_unsupported_layout_is_one_line_error():
    model = tiny_encoder()
    model.encoder.layer[0].intermediate.intermediate_act_fn = None
    del model.encoder.layer[0].intermediate.intermediate_act_fn
    with pytest.raises(UnsupportedModelError, match="layout is not supported"):
        with lrp_rules(model, "cp-lrp"):
            pass
    assert not any("forward" in m.__dict__ for m in model.modules())
