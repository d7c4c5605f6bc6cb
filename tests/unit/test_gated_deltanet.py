"""Gated DeltaNet rules (lrp_llm.archs.gated_deltanet), each against an independent hand formula in float64.

The reference for the recurrence is a plain per-token loop of
``S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T q_t / sqrt(d_k)``
with the held factors (alpha, beta, the normalised keys, 1/||q||) as constants; autograd on
that loop gives the gradients the rules must produce. The model-level checks (forward
unchanged, restored, CP-LRP conservation) are the conformance suite's, run for the registered types.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrp_llm.archs.gated_deltanet import gated_delta_rule, gated_rms_norm
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch

B, L, KH, VH, DK, DV = 2, 10, 2, 4, 8, 8


def _kernel():
    from transformers.models.qwen3_next.modeling_qwen3_next import torch_chunk_gated_delta_rule

    # chunks of 4 over 10 tokens: the inter-chunk state path is exercised, with padding
    def kernel(*args, **kwargs):
        return torch_chunk_gated_delta_rule(*args, chunk_size=4, **kwargs)

    return kernel


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, L, KH, DK, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, L, KH, DK, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, L, VH, DV, generator=g, dtype=torch.float64, requires_grad=True)
    decay = -torch.rand(B, L, VH, generator=g, dtype=torch.float64)
    beta = torch.rand(B, L, VH, generator=g, dtype=torch.float64)
    weight = torch.randn(B, L, VH, DV, generator=g, dtype=torch.float64)
    return q, k, v, decay, beta, weight


def _loop(q_hat, k_hat, v, decay, beta):
    """The plain recurrence on already normalised q, k (batch, L, k_heads, d_k): o (batch, L, v_heads, d_v).

    ``decay``: (batch, L, v_heads) one log decay per head, or (batch, L, v_heads, d_k) one per key channel
    (Kimi delta attention: ``S_t = (I - beta k k^T) diag(alpha_t) S_{t-1} + beta k v^T``)."""
    rep = VH // q_hat.shape[2]
    q_hat, k_hat = q_hat.repeat_interleave(rep, dim=2), k_hat.repeat_interleave(rep, dim=2)
    outs = []
    for b in range(B):
        per_head = []
        for h in range(VH):
            state = torch.zeros(DK, DV, dtype=torch.float64)
            rows = []
            for t in range(L):
                kt, qt = k_hat[b, t, h], q_hat[b, t, h] / DK**0.5
                transition = decay[b, t, h].exp() * (
                    torch.eye(DK, dtype=torch.float64) - beta[b, t, h] * torch.outer(kt, kt)
                )
                state = transition @ state + beta[b, t, h] * torch.outer(kt, v[b, t, h])
                rows.append(state.T @ qt)
            per_head.append(torch.stack(rows))
        outs.append(torch.stack(per_head, dim=1))
    return torch.stack(outs)


def _normalised(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def test_the_plain_kernel_path_is_the_recurrence():
    q, k, v, decay, beta, _ = _inputs()
    out = gated_delta_rule(_kernel(), q, k, v, decay, beta, None)
    want = _loop(_normalised(q), _normalised(k), v, decay, beta)
    # transformers' kernel computes in float32
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_cp_lrp_holds_q_k_decay_beta_and_is_linear_in_v():
    q, k, v, decay, beta, weight = _inputs(1)
    out = gated_delta_rule(_kernel(), q, k, v, decay, beta, "cp-lrp")
    (out * weight).sum().backward()
    assert q.grad is None and k.grad is None  # held constant
    v_ref = v.detach().clone().requires_grad_(True)
    ref = _loop(_normalised(q.detach()), _normalised(k.detach()), v_ref, decay, beta)
    (ref * weight).sum().backward()
    torch.testing.assert_close(v.grad, v_ref.grad, atol=1e-5, rtol=1e-5)
    # linear in v: the relevance of v is the explained sum
    torch.testing.assert_close((v * v.grad).sum(), (out * weight).sum(), atol=1e-5, rtol=1e-5)


def test_attnlrp_splits_o_equals_s_q_half_and_half_with_the_norm_of_q_held():
    q, k, v, decay, beta, weight = _inputs(2)
    out = gated_delta_rule(_kernel(), q, k, v, decay, beta, "attnlrp")
    (out * weight).sum().backward()
    assert k.grad is None
    # hand formula: q_hat = q * c with c = 1/||q|| a constant; the loop's gradients, halved
    c = 1.0 / torch.sqrt((q.detach() ** 2).sum(-1, keepdim=True) + 1e-6)
    q_ref = q.detach().clone().requires_grad_(True)
    v_ref = v.detach().clone().requires_grad_(True)
    ref = _loop(q_ref * c, _normalised(k.detach()), v_ref, decay, beta)
    (ref * weight).sum().backward()
    torch.testing.assert_close(q.grad, 0.5 * q_ref.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v.grad, 0.5 * v_ref.grad, atol=1e-5, rtol=1e-5)
    # bilinear in (q, v): half to each conserves the whole
    total = (q * q.grad).sum() + (v * v.grad).sum()
    torch.testing.assert_close(total, (out * weight).sum(), atol=1e-5, rtol=1e-5)


def test_kimi_delta_attention_with_per_channel_decay_held_is_linear_in_v_and_splits_q_and_v():
    from transformers.models.kimi_linear.modeling_kimi_linear import chunk_kimi_delta_attention

    def kernel(*args, **kwargs):
        return chunk_kimi_delta_attention(*args, chunk_size=4, **kwargs)

    g = torch.Generator().manual_seed(5)
    q = torch.randn(B, L, VH, DK, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, L, VH, DK, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, L, VH, DV, generator=g, dtype=torch.float64, requires_grad=True)
    decay = -torch.rand(B, L, VH, DK, generator=g, dtype=torch.float64)
    beta = torch.rand(B, L, VH, generator=g, dtype=torch.float64)
    weight = torch.randn(B, L, VH, DV, generator=g, dtype=torch.float64)
    out = gated_delta_rule(kernel, q, k, v, decay, beta, "attnlrp")
    c = 1.0 / torch.sqrt((q.detach() ** 2).sum(-1, keepdim=True) + 1e-6)
    q_ref = q.detach().clone().requires_grad_(True)
    v_ref = v.detach().clone().requires_grad_(True)
    ref = _loop(q_ref * c, _normalised(k.detach()), v_ref, decay, beta)
    torch.testing.assert_close(out, ref.detach(), atol=1e-5, rtol=1e-5)
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    assert k.grad is None
    torch.testing.assert_close(q.grad, 0.5 * q_ref.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v.grad, 0.5 * v_ref.grad, atol=1e-5, rtol=1e-5)


class _Norm(nn.Module):
    def __init__(self, activation="silu"):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(1.0 + 0.3 * torch.randn(DV, dtype=torch.float64))
        self.variance_epsilon = 1e-6


@pytest.mark.parametrize("activation", ["silu", "sigmoid"])
@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_gated_rms_norm_holds_rms_and_splits_or_holds_the_gate(rules, activation):
    torch.manual_seed(0)
    norm = _Norm(activation)
    act = F.silu if activation == "silu" else torch.sigmoid
    x = torch.randn(6, DV, dtype=torch.float64, requires_grad=True)
    z = torch.randn(6, DV, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, DV, dtype=torch.float64)
    out = gated_rms_norm(norm, x, z, rules)
    xd, zd = x.detach(), z.detach()
    inv = 1.0 / torch.sqrt((xd**2).mean(-1, keepdim=True) + 1e-6)
    normed = norm.weight.detach() * xd * inv
    torch.testing.assert_close(out, normed * act(zd))
    (out * w).sum().backward()
    if rules == "cp-lrp":
        torch.testing.assert_close(x.grad, w * norm.weight.detach() * inv * act(zd))
        assert z.grad is None
        torch.testing.assert_close((x * x.grad).sum(), (out * w).sum())
    else:
        torch.testing.assert_close(x.grad, 0.5 * w * norm.weight.detach() * inv * act(zd))
        # identity rule on the activation: the gradient at z is (upstream) * act(z) / z, times 1/2
        torch.testing.assert_close(z.grad, 0.5 * w * normed * act(zd) / zd)
        torch.testing.assert_close((x * x.grad).sum() + (z * z.grad).sum(), (out * w).sum())


def test_a_checkpoint_without_its_deltanets_is_refused_in_one_line():
    from lrp_llm.archs.gated_deltanet import deltanets

    with pytest.raises(UnsupportedModelError, match="expected 1 gated DeltaNet modules, found 0") as err:
        deltanets(nn.Sequential(nn.Linear(2, 2)), 1)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("model_type", ["qwen3_next", "qwen3_5_text", "olmo_hybrid", "kimi_linear", "bailing_hybrid"])
@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_a_deltanet_layer_under_the_rules_keeps_its_output_and_conserves(model_type, rules):
    # one layer on its own (bias-free: the conv and projections have none), float64: the relevance of its
    # input equals that of its output under both rule sets (the held factors make it linear, or bilinear
    # with half to each factor under AttnLRP)
    from lrp_llm.archs.gated_deltanet import deltanet_forward, deltanets
    from tests.support.tiny_any import tiny_model

    model = tiny_model(model_type, dtype=torch.float64)
    (mixer,) = deltanets(model, 1)
    x = torch.randn(2, 9, model.config.hidden_size, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    w = torch.randn(2, 9, model.config.hidden_size, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = mixer(x)
    x.requires_grad_(True)
    with ModelPatch(mixer) as patch:
        patch.override_forward(mixer, deltanet_forward(mixer, rules))
        out = mixer(x)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)  # the kernel computes in float32
    (out * w).sum().backward()
    torch.testing.assert_close((x * x.grad).sum(), (out * w).sum(), atol=1e-5, rtol=1e-5)
    assert "forward" not in mixer.__dict__  # restored


@pytest.mark.parametrize("model_type", ["qwen3_next", "kimi_linear"])
def test_a_cached_prefill_under_the_rules_leaves_the_cache_the_next_step_needs(model_type):
    from lrp_llm.archs import get_arch
    from tests.support.tiny_any import tiny_model

    model = tiny_model(model_type)
    ids = torch.tensor([[3, 7, 1, 9, 4, 2, 8, 5, 6]])
    with torch.no_grad():
        plain = model(ids[:, :8], use_cache=True)
        want = model(ids[:, 8:], past_key_values=plain.past_key_values, use_cache=True).logits
        with ModelPatch(model) as patch:
            get_arch(model).apply(patch, model, "attnlrp")
            ruled = model(ids[:, :8], use_cache=True)
            step = model(ids[:, 8:], past_key_values=ruled.past_key_values, use_cache=True).logits
    torch.testing.assert_close(ruled.logits, plain.logits, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(step, want, atol=1e-4, rtol=1e-5)
