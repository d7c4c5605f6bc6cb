"""Each primitive rule against an independent hand-written formula on small tensors."""

import torch

from lrp_llm.mechanism.primitives import identity_rule, layer_norm_detached, rms_norm_detached, scale_grad

torch.manual_seed(0)


def _rel(x, grad):
    return x * grad


def test_identity_rule_passes_relevance_unchanged_elementwise():
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.silu(x)
    out = identity_rule(x, y)
    assert torch.equal(out, y)  # forward value untouched
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, g)
    # hand formula: R_in = x * g * silu(x) / x = silu(x) * g = R_out
    assert torch.allclose(_rel(x, grad), y.detach() * g, atol=1e-12)


def test_identity_rule_with_factor_and_zero_input():
    x = torch.tensor([0.0, 1e-20, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.gelu(x)
    (grad,) = torch.autograd.grad(identity_rule(x, y, 0.5), x, torch.ones(4, dtype=torch.float64))
    assert torch.isfinite(grad).all()
    assert torch.allclose(_rel(x, grad), 0.5 * y.detach(), atol=1e-12)


def test_uniform_rule_for_a_product_splits_half_half():
    a = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    out = scale_grad(a, 0.5) * scale_grad(b, 0.5)
    g = torch.randn_like(out)
    ga, gb = torch.autograd.grad(out, (a, b), g)
    hand = 0.5 * a.detach() * b.detach() * g  # each factor: half of R_out = a*b*g
    assert torch.allclose(_rel(a, ga), hand)
    assert torch.allclose(_rel(b, gb), hand)
    assert torch.allclose(_rel(a, ga) + _rel(b, gb), out.detach() * g)


def test_matmul_relevance_is_the_z_rule():
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64)
    out = x @ w.T
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, g)
    # z-rule without bias: R_j = sum_i x_j w_ij / z_i * R_i with R_i = z_i g_i
    hand = torch.einsum("nj,ij,ni->nj", x.detach(), w, g)
    assert torch.allclose(_rel(x, grad), hand)


def test_softmax_gradient_times_input_is_the_attnlrp_softmax_rule():
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    s = torch.softmax(x, -1)
    g = torch.randn_like(s)
    (grad,) = torch.autograd.grad(s, x, g)
    r_out = s.detach() * g
    # AttnLRP (Achtibat et al. 2024, eq. for softmax): R_in_i = x_i (R_out_i - s_i sum_j R_out_j)
    hand = x.detach() * (r_out - s.detach() * r_out.sum(-1, keepdim=True))
    assert torch.allclose(_rel(x, grad), hand)


def test_attention_value_path_gets_half_and_query_key_a_quarter_each():
    q = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    out = torch.nn.functional.scaled_dot_product_attention(
        scale_grad(q, 0.25)[None], scale_grad(k, 0.25)[None], scale_grad(v, 0.5)[None]
    )[0]
    g = torch.randn_like(out)
    gq, gk, gv = torch.autograd.grad(out, (q, k, v), g)
    # hand: scores z = q k^T / 2, A = softmax(z), O = A v
    z = q.detach() @ k.detach().T / 2.0
    a = torch.softmax(z, -1)
    r_out = (a @ v.detach()) * g
    r_v = 0.5 * v.detach() * (a.T @ g)
    assert torch.allclose(_rel(v, gv), r_v)
    assert torch.allclose(_rel(v, gv).sum(), 0.5 * r_out.sum())
    # relevance reaching the scores: A's gradient is halved, then the softmax rule
    grad_z = a * (0.5 * (g @ v.detach().T) - (a * 0.5 * (g @ v.detach().T)).sum(-1, keepdim=True))
    r_z = z * grad_z
    # q and k each receive half of the score relevance (uniform rule on q k^T)
    assert torch.allclose(_rel(q, gq).sum(), 0.5 * r_z.sum())
    assert torch.allclose(_rel(k, gk).sum(), 0.5 * r_z.sum())
    hand_q = 0.5 * torch.einsum("ij,jd,id->id", grad_z, k.detach() / 2.0, q.detach())
    assert torch.allclose(_rel(q, gq), hand_q)


def test_rms_norm_with_detached_scale_conserves_elementwise():
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64)
    for offset in (0.0, 1.0):
        out = rms_norm_detached(x, w, 1e-6, offset=offset)
        ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (offset + w)
        assert torch.allclose(out, ref)
        g = torch.randn_like(out)
        (grad,) = torch.autograd.grad(out, x, g)
        assert torch.allclose(_rel(x, grad), out.detach() * g)


def test_layer_norm_with_detached_scale_matches_the_ln_rule():
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    w, b = torch.randn(8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    out = layer_norm_detached(x, w, b, 1e-5)
    assert torch.allclose(out, torch.nn.functional.layer_norm(x, (8,), w, b, 1e-5))
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, g)
    # Ali et al. 2022: y = (x - mean) * c * w with c constant -> linear map (I - 1/n) * c * w
    c = 1 / torch.sqrt(x.detach().var(-1, unbiased=False, keepdim=True) + 1e-5)
    centre = torch.eye(8, dtype=torch.float64) - 1.0 / 8
    hand = x.detach() * ((g * w * c) @ centre.T)
    assert torch.allclose(_rel(x, grad), hand)
    # bias-free: the relevance of the input sums to the output relevance
    assert torch.allclose(_rel(x, grad).sum(-1), (out.detach() * g).sum(-1))
