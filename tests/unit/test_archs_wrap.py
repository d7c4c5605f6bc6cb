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
    ("zamba", "ZambaMambaMixer"),
    ("minimax_m3_vl", "MiniMaxM3SparseForConditionalGeneration"),
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


def _m3_mlp(limit: float):
    from tests.support.tiny_any import tiny_model

    model = tiny_model("minimax_m3_vl_text", dtype=torch.float64)
    mlp = model.model.layers[0].mlp
    assert type(mlp).__name__ == "MiniMaxM3VLDenseMLP"
    mlp.swiglu_limit = limit  # low, so that both clamps are active on some channels
    return mlp


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_minimax_m3s_clamped_swiglu_on_halves_matches_the_hand_formula(rules):
    # down((clamp(u, -L, L) + 1) * swish_a(min(g, L))), [g | u] = gate_up(x): the identity rule on the gate's
    # activation (gradient glu / g); the product uniform (x 1/2 each side, the up side through the clamp's plain
    # gradient) under AttnLRP and RelP, the (u' + 1) side held under CP-LRP
    from lrp_llm.archs.minimax_m3 import clamped_swiglu_mlp_forward
    from lrp_llm.mechanism.patch import ModelPatch

    torch.manual_seed(0)
    mlp = _m3_mlp(limit=0.5)
    x = torch.randn(5, 32, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(5, 32, dtype=torch.float64)
    want_out = mlp(x)
    with ModelPatch(mlp) as patch:
        patch.override_forward(mlp, clamped_swiglu_mlp_forward(mlp, rules))
        out = mlp(x)
        (grad,) = torch.autograd.grad(out, x, upstream)
    torch.testing.assert_close(out, want_out, atol=1e-12, rtol=0)

    w_gate, w_up = mlp.gate_up_proj.weight.detach().chunk(2, dim=0)
    a, limit = mlp.swiglu_alpha, mlp.swiglu_limit
    g, u = x.detach() @ w_gate.T, x.detach() @ w_up.T
    assert (g > limit).any() and (u.abs() > limit).any()
    gc = g.clamp(max=limit)
    glu = gc * torch.sigmoid(a * gc)
    shifted = u.clamp(-limit, limit) + 1
    r = upstream @ mlp.down_proj.weight.detach()  # the gradient at the product
    if rules == "cp-lrp":
        want = (r * shifted * glu / g) @ w_gate
        # exact: the relevance x * grad sums to the output's upstream-weighted value
        torch.testing.assert_close((x.detach() * grad).sum(), (upstream * out.detach()).sum(), atol=1e-10, rtol=0)
    else:
        inside = (u.abs() < limit).to(u.dtype)
        want = (r * 0.5 * shifted * glu / g) @ w_gate + (r * 0.5 * glu * inside) @ w_up
    torch.testing.assert_close(grad, want, atol=1e-10, rtol=0)
    assert "forward" not in mlp.__dict__  # restored


def test_minimax_m3s_routed_experts_take_the_clamped_swiglu_on_halves():
    # the experts' gate is recognised as the clamped SwiGLU on [g | u] halves (not refused) and, under the rules,
    # each expert computes what transformers' own forward does
    from lrp_llm.archs.experts import _check_layout, expert_forward
    from tests.support.tiny_any import tiny_model

    experts = tiny_model("minimax_m3_vl_text", dtype=torch.float64).model.layers[1].mlp.experts
    experts.swiglu_limit = experts.limit = 0.5
    assert experts.is_concatenated and _check_layout(experts) == "clamped_swiglu"
    x = torch.randn(4, 32, dtype=torch.float64)
    want = torch.nn.functional.linear(
        experts._apply_gate(torch.nn.functional.linear(x, experts.gate_up_proj[1])), experts.down_proj[1]
    )
    for gate_rule in ("uniform", "detach"):
        torch.testing.assert_close(expert_forward(experts, 1, x, gate_rule, "clamped_swiglu"), want, atol=1e-12, rtol=0)


def test_dbrxs_qkv_clip_passes_relevance_by_the_identity_rule_and_keeps_the_modules_clamp():
    from lrp_llm.archs.dbrx import clip_identity
    from lrp_llm.mechanism.patch import ModelPatch

    torch.manual_seed(0)
    proj = nn.Linear(6, 8, bias=False, dtype=torch.float64)
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(5, 8, dtype=torch.float64)
    with ModelPatch(proj) as patch:
        patch.hook_output(proj, clip_identity(0.7))
        pre = proj(x)
        y = pre.clamp(min=-0.7, max=0.7)  # what DbrxAttention does after Wqkv
        (grad_pre,) = torch.autograd.grad(y, pre, upstream, retain_graph=True)
        (grad_x,) = torch.autograd.grad(y, x, upstream)
    raw = x.detach() @ proj.weight.detach().T
    assert (raw.abs() > 0.7).any() and (raw.abs() < 0.7).any()
    torch.testing.assert_close(y.detach(), raw.clamp(-0.7, 0.7), atol=0, rtol=0)
    # the clamp's relevance (value x gradient) reaches its input whole, element by element
    want = upstream * raw.clamp(-0.7, 0.7) / raw
    torch.testing.assert_close(grad_x, want @ proj.weight.detach(), atol=1e-12, rtol=0)
    assert not proj._forward_hooks and grad_pre.shape == pre.shape


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_dbrxs_experts_match_the_hand_formula(rules):
    # y_t = sum_s w_ts E_e(x_t), E_e(x) = (silu(x W1_e^T) * x V1_e^T) W2_e: the scores held under CP-LRP and RelP,
    # the uniform rule on w * E under AttnLRP; the gate activation held under CP-LRP, the uniform rule on the gated
    # product (identity rule on silu) under AttnLRP and RelP
    from lrp_llm.archs.dbrx import experts_forward
    from lrp_llm.mechanism.patch import ModelPatch
    from tests.support.tiny_any import tiny_model

    ffn = tiny_model("dbrx", dtype=torch.float64).transformer.blocks[0].ffn
    experts = ffn.experts
    torch.manual_seed(1)
    x = torch.randn(1, 5, 32, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        weights, index = ffn.route_tokens_to_experts(ffn.router(x))
    weights = weights.clone().requires_grad_(True)
    upstream = torch.randn(1, 5, 32, dtype=torch.float64)
    plain = experts(x, index, weights)
    with ModelPatch(experts) as patch:
        patch.override_forward(experts, experts_forward(experts, rules))
        out = experts(x, index, weights)
        grad_x, grad_w = torch.autograd.grad(out, (x, weights), upstream, allow_unused=True)
    torch.testing.assert_close(out, plain, atol=1e-12, rtol=0)

    shape = (experts.num_experts, experts.ffn_hidden_size, experts.hidden_size)
    w1, v1, w2 = (t.detach().view(shape) for t in (experts.mlp.w1, experts.mlp.v1, experts.mlp.w2))
    xs, c = x.detach()[0], upstream[0]
    want_x, want_w = torch.zeros_like(xs), torch.zeros_like(weights)  # weights: (tokens, k)
    for t in range(5):
        for s in range(index.shape[1]):
            e = int(index[t, s])
            g, u = xs[t] @ w1[e].T, xs[t] @ v1[e].T
            r = w2[e] @ c[t]  # the gradient at the gated product
            w = float(weights[t, s].detach())
            if rules == "cp-lrp":  # the gate activation held
                expert_grad = (r * torch.nn.functional.silu(g)) @ v1[e]
            else:  # uniform on the gated product; identity rule on silu: silu(g) / g = sigmoid(g)
                expert_grad = 0.5 * (r * torch.sigmoid(g) * u) @ w1[e] + 0.5 * (r * torch.nn.functional.silu(g)) @ v1[e]
            if rules == "attnlrp":  # uniform on scores x experts
                want_x[t] += 0.5 * w * expert_grad
                want_w[t, s] = 0.5 * c[t] @ ((torch.nn.functional.silu(g) * u) @ w2[e])
            else:  # scores held
                want_x[t] += w * expert_grad
    torch.testing.assert_close(grad_x[0], want_x, atol=1e-10, rtol=0)
    if rules == "attnlrp":
        torch.testing.assert_close(grad_w, want_w, atol=1e-10, rtol=0)
    else:
        assert grad_w is None  # held
    assert "forward" not in experts.__dict__  # restored


def test_dbrxs_layer_norm_keeps_the_kernels_value_and_the_rules_gradient():
    from lrp_llm.archs.blocks import install_norms
    from lrp_llm.archs.dbrx import PARTS, kernel_valued
    from lrp_llm.mechanism.patch import ModelPatch

    torch.manual_seed(0)
    norm = nn.LayerNorm(16, bias=False)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
    x = (3 * torch.randn(4, 16)).requires_grad_(True)
    upstream = torch.randn(4, 16)
    kernel = norm(x).detach()
    grads = []
    for exact in (False, True):
        with ModelPatch(norm) as patch:
            install_norms(patch, [norm], PARTS.norm)
            if exact:
                patch.override_forward(norm, kernel_valued(norm))
            y = norm(x)
            grads.append(torch.autograd.grad(y, x, upstream)[0])
        if exact:
            torch.testing.assert_close(y.detach(), kernel, atol=0, rtol=0)
    # the rule: 1/sigma held, so the gradient is (upstream * weight) centred, over sigma
    sigma = torch.sqrt(x.detach().var(-1, unbiased=False, keepdim=True) + norm.eps)
    g = upstream * norm.weight.detach() / sigma
    torch.testing.assert_close(grads[1], g - g.mean(-1, keepdim=True), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], atol=0, rtol=0)


def _scaled(t: torch.Tensor, factor: float | None) -> torch.Tensor:
    """``t`` in value, its gradient times ``factor`` (None: held)."""
    return t.detach() if factor is None else factor * t + (1 - factor) * t.detach()


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_minimax_lightning_attention_matches_the_naive_recurrence_with_its_factors(rules):
    # o_i = sum_{j <= i} exp(-s (i - j)) (q_i . k_j) v_j per head, written position by position (the module
    # computes it block-wise with a carried state); silu by the identity rule; keys held; q and v and the
    # gate with the table's factors; the norm's 1/rms held
    from lrp_llm.mechanism.context import lrp_rules
    from tests.support.tiny_any import tiny_model

    model = tiny_model("minimax", dtype=torch.float64)
    attn = model.model.layers[0].self_attn
    heads, dim = attn.num_attention_heads, attn.head_dim
    torch.manual_seed(2)
    x = torch.randn(1, 9, 32, dtype=torch.float64, requires_grad=True)  # 9 positions: three blocks of 4
    upstream = torch.randn(1, 9, 32, dtype=torch.float64)
    plain = attn(x, None, None)[0]
    with lrp_rules(model, rules):
        out = attn(x, None, None)[0]
        (grad,) = torch.autograd.grad(out, x, upstream)
    # the module's RMSNorm computes in float32, the norm rule in the model's float64
    torch.testing.assert_close(out, plain, atol=1e-6, rtol=0)

    q_f, v_f, gate_f = {"attnlrp": (0.25, 0.25, 0.5), "cp-lrp": (None, 1.0, None)}[rules]
    xn = x.detach().clone().requires_grad_(True)
    pre = xn @ attn.qkv_proj.weight.detach().T
    act = pre * (torch.nn.functional.silu(pre) / pre).detach()  # the identity rule
    q, k, v = act.view(1, 9, heads, 3, dim).unbind(dim=-2)
    q, k, v = _scaled(q, q_f), k.detach(), _scaled(v, v_f)
    slope = attn.slope_rate.detach().view(heads)
    o = torch.zeros(1, 9, heads, dim, dtype=torch.float64)
    for i in range(9):
        for j in range(i + 1):
            score = (q[0, i] * k[0, j]).sum(-1, keepdim=True)  # (heads, 1)
            o[0, i] = o[0, i] + torch.exp(-slope * (i - j)).unsqueeze(-1) * score * v[0, j]
    o = o.reshape(1, 9, heads * dim)
    rms = torch.sqrt(o.pow(2).mean(-1, keepdim=True) + attn.norm.variance_epsilon).detach()
    normed = o / rms * attn.norm.weight.detach()
    gate = _scaled(torch.sigmoid(xn @ attn.output_gate.weight.detach().T), gate_f)
    naive = (gate * normed) @ attn.out_proj.weight.detach().T
    (want,) = torch.autograd.grad(naive, xn, upstream)
    # the module's decay buffers were computed in float32 (block-wise products of exponentials): ~1e-7 relative
    torch.testing.assert_close(naive.detach(), out.detach(), atol=1e-6 * float(out.detach().abs().max()), rtol=1e-6)
    torch.testing.assert_close(grad, want, atol=1e-6 * float(want.abs().max()), rtol=1e-6)
    if rules == "cp-lrp":  # linear in v: the relevance sums to the output's
        torch.testing.assert_close((x.detach() * grad).sum(), (upstream * out.detach()).sum(), atol=1e-10, rtol=0)
