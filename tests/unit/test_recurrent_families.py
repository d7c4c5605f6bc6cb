"""RecurrentGemma's RG-LRU and RWKV's time and channel mixing: each rule against an independent
hand-written recurrence in float64 (the held factors as constants, the gradients written out),
the logit soft-cap's identity rule, the cached (generation) path, and the one-line refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lrp_llm.archs.recurrent_gemma import (
    install_forward_softcap,
    install_recurrent_blocks,
    recurrent_blocks,
    softcap_gradient_factor,
)
from lrp_llm.archs.rwkv import install_rwkv_rules, mixers
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.mechanism.patch import ModelPatch
from lrp_llm.mechanism.primitives import identity_rule
from tests.support.conformance import without_biases_and_position_embeddings
from tests.support.tiny_any import tiny_model

L = 6


def _randn(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _hooks(model: nn.Module) -> tuple[int, int]:
    return sum(len(m._forward_hooks) for m in model.modules()), sum("forward" in m.__dict__ for m in model.modules())


# ------------------------------------------------------------------ RecurrentGemma
@pytest.fixture(scope="module")
def gemma():
    return tiny_model("recurrent_gemma", dtype=torch.float64)


def _rg_lru_by_hand(lru: nn.Module, x: torch.Tensor):
    """The RG-LRU of x (L, W) one channel and step at a time: outputs h (L, W) and the held a, i * m (L, W)."""
    heads, block, _ = lru.input_gate_weight.shape
    a = torch.zeros(L, heads * block, dtype=torch.float64)
    im = torch.zeros_like(a)
    for t in range(L):
        for hd in range(heads):
            xs = x[t, hd * block : (hd + 1) * block]
            for j in range(block):
                c = hd * block + j
                gi = 1 / (
                    1
                    + math.exp(
                        -(float(xs @ lru.input_gate_weight[hd, :, j].detach()) + float(lru.input_gate_bias[hd, j]))
                    )
                )
                ga = 1 / (
                    1
                    + math.exp(
                        -(
                            float(xs @ lru.recurrent_gate_weight[hd, :, j].detach())
                            + float(lru.recurrent_gate_bias[hd, j])
                        )
                    )
                )
                lam = math.log1p(math.exp(float(lru.recurrent_param[c])))  # softplus(Lambda)
                decay = math.exp(-8.0 * ga * lam)  # sigmoid(Lambda')^(8 r) written as exp(-8 r softplus(Lambda))
                # position 0 starts the sequence: no decay, no normalisation
                a[t, c] = 0.0 if t == 0 else decay
                im[t, c] = gi * (1.0 if t == 0 else math.sqrt(1 - decay**2))
    h = torch.zeros_like(x)
    state = torch.zeros(heads * block, dtype=torch.float64)
    for t in range(L):
        state = a[t] * state + im[t] * x[t]
        h[t] = state
    return h, a, im


def _scan_transposed(g: torch.Tensor, a: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """d sum(g * h) / dx for the held recurrence: im_t * sum_{s >= t} g_s * prod_{t < r <= s} a_r."""
    out = torch.zeros_like(g)
    carry = torch.zeros(g.shape[1], dtype=torch.float64)
    for t in reversed(range(L)):
        carry = g[t] + (a[t + 1] * carry if t + 1 < L else 0.0)
        out[t] = im[t] * carry
    return out


def test_rg_lru_rule_is_the_recurrence_with_held_decay_gate_and_normaliser(gemma):
    block = recurrent_blocks(gemma)[0]
    lru = block.rg_lru
    x, c = _randn(1, L, lru.recurrent_param.shape[0], seed=1), _randn(1, L, lru.recurrent_param.shape[0], seed=2)
    pos = torch.arange(L)[None]
    with torch.no_grad():
        h, a, im = _rg_lru_by_hand(lru, x[0])
    lru.recurrent_states = None
    with torch.no_grad():
        torch.testing.assert_close(lru(x, pos)[0], h, atol=1e-6, rtol=0)  # the hand recurrence is transformers'
    with ModelPatch(gemma) as patch:
        install_recurrent_blocks(patch, [block], "cp-lrp")
        lru.recurrent_states = None
        xr = x.clone().requires_grad_(True)
        out = lru(xr, pos)
        (grad,) = torch.autograd.grad((out * c).sum(), xr)
    want = _scan_transposed(c[0], a, im)
    # transformers accumulates the scan in float32: rounding of that order
    torch.testing.assert_close(grad[0], want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close((x * grad).sum(), (out * c).sum(), atol=1e-6, rtol=0)  # linear in x: conserves


def _causal_conv_transposed(g: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """d sum(g * y) / dx for the depthwise causal conv y_t = sum_k w_k x_{t - (K-1) + k}: g (L, W)."""
    w = conv.weight[:, 0, :].detach()  # (W, K)
    K = w.shape[1]
    out = torch.zeros_like(g)
    for t in range(L):
        for k in range(K):
            src = t - (K - 1) + k
            if src >= 0:
                out[src] += w[:, k] * g[t]
    return out


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_recurrent_block_gate_product_rule(gemma, rules):
    block = recurrent_blocks(gemma)[0]
    width = block.linear_out.in_features
    u, c = _randn(1, L, block.linear_x.in_features, seed=3), _randn(1, L, block.linear_out.out_features, seed=4)
    pos = torch.arange(L)[None]
    seen = {}

    def keep(name):
        def hook(_m, _a, out):
            out.retain_grad()
            seen[name] = out

        return hook

    handles = [block.linear_x.register_forward_hook(keep("x")), block.linear_y.register_forward_hook(keep("y"))]
    try:
        with ModelPatch(gemma) as patch:
            install_recurrent_blocks(patch, [block], rules)
            ur = u.clone().requires_grad_(True)
            out, _ = block(ur, pos, None, use_cache=False)
            (out * c).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    xl, p = seen["x"].detach()[0], seen["y"].detach()[0]
    conv = block.conv_1d
    xc = conv(xl.T[None])[0, :, :L].T.detach()  # the conv's output (L, W)
    with torch.no_grad():
        h, a, im = _rg_lru_by_hand(block.rg_lru, xc)
    gelu = nn.functional.gelu(p, approximate="tanh")
    g_prod = c[0] @ block.linear_out.weight  # gradient at h * gelu(y)
    uniform = rules != "cp-lrp"
    half = 0.5 if uniform else 1.0
    want_x = _causal_conv_transposed(_scan_transposed(half * g_prod * gelu, a, im), conv)
    want_y = 0.5 * g_prod * h * gelu / p if uniform else torch.zeros(L, width, dtype=torch.float64)
    torch.testing.assert_close(seen["x"].grad[0], want_x, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        seen["y"].grad[0] if seen["y"].grad is not None else torch.zeros_like(p), want_y, atol=1e-6, rtol=0
    )


def test_softcap_factor_makes_the_tanh_an_identity_rule():
    cap = 3.0
    logits = torch.tensor([0.0, 1e-9, -0.4, 2.5, -7.0, 20.0], dtype=torch.float64)
    lr = logits.clone().requires_grad_(True)
    capped = torch.tanh(identity_rule(lr, lr, 1.0, softcap_gradient_factor(lr, cap)) / cap) * cap
    (grad,) = torch.autograd.grad(capped.sum(), lr)
    want = cap * torch.tanh(logits / cap)
    torch.testing.assert_close(capped, want, atol=0, rtol=0)
    torch.testing.assert_close(logits * grad, torch.where(logits == 0, 0.0, want), atol=1e-12, rtol=1e-9)
    assert grad[0] == 1.0  # the limit y / x -> 1 at 0
    # far out the tanh's own derivative 1 - tanh^2 loses its digits (float64: 0 past |x / cap| of about 19);
    # the gradient is then 0, not NaN
    far = torch.tensor([90.0, -90.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(
        (torch.tanh(identity_rule(far, far, 1.0, softcap_gradient_factor(far, cap)) / cap)).sum(), far
    )
    assert torch.equal(grad, torch.zeros(2, dtype=torch.float64))


def test_soft_capped_recurrent_gemma_conserves_and_restores():
    from lrp_llm.engines.causal_lm import relevance
    from tests.support.models import random_ids

    # a small cap, so the tanh is far from linear at these logits: without its rule the sum would miss much
    model = without_biases_and_position_embeddings(
        tiny_model("recurrent_gemma", dtype=torch.float64, logits_soft_cap=2.0)
    )
    out = relevance(model, random_ids(12), [8, 11], method="cp-lrp")
    for i in range(2):
        assert abs(float(out["relevance"][i].sum() / out["logits"][i]) - 1.0) < 1e-6
    before = _hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with ModelPatch(model) as patch:
            install_forward_softcap(patch, model, "logits_soft_cap")
            raise RuntimeError("boom")
    assert _hooks(model) == before


def test_recurrent_gemma_layout_mismatch_is_refused_in_one_line():
    model = tiny_model("recurrent_gemma")
    del model.model.layers[0].temporal_block.rg_lru
    model.model.layers[0].temporal_block.rg_lru = nn.Identity()
    before = _hooks(model)
    with pytest.raises(
        UnsupportedModelError, match=r"^RecurrentGemmaForCausalLM: expected 1 RG-LRU recurrent blocks"
    ) as err:
        with lrp_rules(model, "cp-lrp"):
            pass
    assert "\n" not in str(err.value)
    assert _hooks(model) == before


# ------------------------------------------------------------------ RWKV
@pytest.fixture(scope="module")
def rwkv():
    model = tiny_model("rwkv", dtype=torch.float64)
    with torch.no_grad():
        model(torch.tensor([[1, 2]]))  # the first eval forward rescales the layers once (transformers' own step)
    return model


def _shift(x: torch.Tensor) -> torch.Tensor:
    return torch.cat((torch.zeros_like(x[:1]), x[:-1]))


def _mix(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    return x * mu + _shift(x) * (1 - mu)


def _mix_transposed(g: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """d sum(g * mix(x)) / dx: x_t enters at t (weight mu) and, shifted, at t + 1 (weight 1 - mu)."""
    out = g * mu
    out[:-1] += g[1:] * (1 - mu)
    return out


def _wkv_weights(k: torch.Tensor, decay: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """The WKV's weights w[t, i] (L, L, d): exp(k_i - (t-1-i) exp(decay)) for i < t, exp(first + k_t) at i = t."""
    w = torch.zeros(L, L, k.shape[1], dtype=torch.float64)
    for t in range(L):
        for i in range(t):
            w[t, i] = torch.exp(k[i] - (t - 1 - i) * torch.exp(decay))
        w[t, t] = torch.exp(first + k[t])
    return w


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_rwkv_time_mixing_rule_holds_the_wkv_weights(rwkv, rules):
    mixer = mixers(rwkv)[0][1]
    d = mixer.key.in_features
    x, c = _randn(1, L, d, seed=5), _randn(1, L, d, seed=6)
    with ModelPatch(rwkv) as patch:
        install_rwkv_rules(patch, rwkv, rules)
        xr = x.clone().requires_grad_(True)
        out, _ = mixer(xr)
        (grad,) = torch.autograd.grad((out * c).sum(), xr)
    x0 = x[0]
    mk, mv, mr = (p.detach()[0, 0] for p in (mixer.time_mix_key, mixer.time_mix_value, mixer.time_mix_receptance))
    Wk, Wv, Wr, Wo = (m.weight.detach() for m in (mixer.key, mixer.value, mixer.receptance, mixer.output))
    k, v, rpre = _mix(x0, mk) @ Wk.T, _mix(x0, mv) @ Wv.T, _mix(x0, mr) @ Wr.T
    w = _wkv_weights(k, mixer.time_decay.detach(), mixer.time_first.detach())
    wkv = (w * v[None]).sum(1) / w.sum(1)
    r = torch.sigmoid(rpre)
    # transformers' WKV keeps its normaliser in float32: rounding of that order
    torch.testing.assert_close(out[0].detach(), (r * wkv) @ Wo.T, atol=1e-6, rtol=0)  # the hand WKV is transformers'
    g = c[0] @ Wo  # gradient at r * wkv
    half = 0.5 if rules != "cp-lrp" else 1.0
    g_v = (w * (half * g * r / w.sum(1))[:, None]).sum(0)  # through the fixed average of the values
    want = _mix_transposed(g_v @ Wv, mv)
    if rules != "cp-lrp":  # the receptance's half, by the identity rule sigmoid(x) / x
        want = want + _mix_transposed((0.5 * g * wkv * r / rpre) @ Wr, mr)
    torch.testing.assert_close(grad[0], want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_rwkv_channel_mixing_rule(rwkv, rules):
    mixer = mixers(rwkv)[1][1]
    d = mixer.receptance.in_features
    x, c = _randn(1, L, d, seed=7), _randn(1, L, d, seed=8)
    with ModelPatch(rwkv) as patch:
        install_rwkv_rules(patch, rwkv, rules)
        xr = x.clone().requires_grad_(True)
        out, _ = mixer(xr)
        (grad,) = torch.autograd.grad((out * c).sum(), xr)
    x0 = x[0]
    mk, mr = (p.detach()[0, 0] for p in (mixer.time_mix_key, mixer.time_mix_receptance))
    Wk, Wv, Wr = (m.weight.detach() for m in (mixer.key, mixer.value, mixer.receptance))
    kpre, rpre = _mix(x0, mk) @ Wk.T, _mix(x0, mr) @ Wr.T
    value, r = torch.relu(kpre).square() @ Wv.T, torch.sigmoid(rpre)
    torch.testing.assert_close(out[0].detach(), r * value, atol=1e-12, rtol=0)
    half = 0.5 if rules != "cp-lrp" else 1.0
    g_key = (half * c[0] * r) @ Wv * torch.relu(kpre)  # identity rule: relu(x)^2 / x = relu(x)
    want = _mix_transposed(g_key @ Wk, mk)
    if rules != "cp-lrp":
        want = want + _mix_transposed((0.5 * c[0] * value * r / rpre) @ Wr, mr)
    torch.testing.assert_close(grad[0], want, atol=1e-10, rtol=0)
    if rules == "cp-lrp":  # linear in x with the gate held: conserves
        torch.testing.assert_close((x * grad).sum(), (out * c).sum(), atol=1e-10, rtol=0)


def test_rwkv_cached_generation_step_is_unchanged_under_the_rules(rwkv):
    ids = torch.tensor([[3, 7, 1, 9, 4]])
    with torch.no_grad():
        first = rwkv(ids, use_cache=True)
        plain = rwkv(torch.tensor([[5]]), state=[s.clone() for s in first.state], use_cache=True)
        for rules in ("attnlrp", "cp-lrp"):
            with lrp_rules(rwkv, rules):
                prompt = rwkv(ids, use_cache=True)
                step = rwkv(torch.tensor([[5]]), state=[s.clone() for s in prompt.state], use_cache=True)
            torch.testing.assert_close(prompt.logits, first.logits, atol=1e-10, rtol=0)
            torch.testing.assert_close(step.logits, plain.logits, atol=1e-10, rtol=0)
            for got, want in zip(step.state, plain.state, strict=True):
                torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_rwkv_layout_mismatch_is_refused_in_one_line():
    model = tiny_model("rwkv")
    model.rwkv.blocks[1].feed_forward = nn.Identity()
    before = _hooks(model)
    with pytest.raises(UnsupportedModelError, match=r"^RwkvForCausalLM: expected 2 RWKV blocks") as err:
        with lrp_rules(model, "attnlrp"):
            pass
    assert "\n" not in str(err.value)
    assert _hooks(model) == before


# ------------------------------------------------------------------ xLSTM
@pytest.fixture(scope="module")
def xlstm():
    return tiny_model("xlstm", dtype=torch.float64)


def _mlstm_matrix(q: torch.Tensor, k: torch.Tensor, i_pre: torch.Tensor, f_pre: torch.Tensor, eps: float):
    """The mLSTM cell as the linear map h = A v it is with q, k and the gates held: A (heads, L, L).

    q, k (heads, L, d); i_pre, f_pre (heads, L). Written out from the stabilised recurrence
    (m_t = max(log f_t + m_{t-1}, i_t), m_0 = 0): the state's weight of step s at step t is
    exp(sum_{s<r<=t} log f_r + i_s - m_t), and h_t = sum_s w_ts (q_t . k_s) v_s / (max(|q_t . n_t|, exp(-m_t)) + eps).
    """
    heads, length, d = q.shape
    qs = q * d**-0.5
    A = torch.zeros(heads, length, length, dtype=torch.float64)
    for h in range(heads):
        logf = [math.log(1 / (1 + math.exp(-float(f_pre[h, t])))) for t in range(length)]
        m = 0.0
        for t in range(length):
            m = max(logf[t] + m, float(i_pre[h, t]))
            w = [math.exp(sum(logf[s + 1 : t + 1]) + float(i_pre[h, s]) - m) for s in range(t + 1)]
            n = sum(w[s] * k[h, s] for s in range(t + 1))
            den = max(abs(float(qs[h, t] @ n)), math.exp(-m)) + eps
            for s in range(t + 1):
                A[h, t, s] = w[s] * float(qs[h, t] @ k[h, s]) / den
    return A


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_mlstm_rule_is_the_cell_with_held_query_key_and_gates(xlstm, rules):
    from lrp_llm.archs.xlstm import install_mlstm_layers, mlstm_layers

    layer = mlstm_layers(xlstm)[1]
    heads, d_model = xlstm.config.num_heads, layer.q.in_features
    x, c = 0.3 * _randn(1, L, d_model, seed=9), _randn(1, L, d_model, seed=10)
    with ModelPatch(xlstm) as patch:
        install_mlstm_layers(patch, [layer], rules)
        xr = x.clone().requires_grad_(True)
        out, _ = layer(xr)
        (grad,) = torch.autograd.grad((out * c).sum(), xr)
    with torch.no_grad():
        x0 = x[0]
        per_head = lambda t: t.reshape(L, heads, -1).transpose(0, 1)  # noqa: E731  (L, H*D) -> (H, L, D)
        cap = xlstm.config.gate_soft_cap
        i_pre = (cap * torch.tanh(layer.igate_preact(x0) / cap)).T
        f_pre = (cap * torch.tanh(layer.fgate_preact(x0) / cap)).T
        A = _mlstm_matrix(per_head(layer.q(x0)), per_head(layer.k(x0)), i_pre, f_pre, xlstm.config.eps)
        v = per_head(layer.v(x0))
        h = A @ v  # (H, L, Dv)
        norm = layer.multihead_norm
        centred = h - h.mean(-1, keepdim=True)
        inv = 1 / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + norm.eps)
        hn = (centred * inv).transpose(0, 1).reshape(L, -1) * norm.weight
        o_pre = layer.ogate_preact(x0)
        gate = torch.sigmoid(o_pre)
        # transformers' cell keeps its states in float32: rounding of that order
        torch.testing.assert_close(out[0], layer.out_proj(gate * hn), atol=1e-5, rtol=1e-5)
        g = c[0] @ layer.out_proj.weight  # gradient at sigmoid(o) * hn
        half = 0.5 if rules != "cp-lrp" else 1.0
        g_hn = per_head(half * g * gate * norm.weight) * inv  # through the norm with 1/sigma held
        g_h = g_hn - g_hn.mean(-1, keepdim=True)
        g_v = A.transpose(1, 2) @ g_h  # (H, L, Dv)
        want = g_v.transpose(0, 1).reshape(L, -1) @ layer.v.weight
        if rules != "cp-lrp":  # the output gate's half, by the identity rule sigmoid(x) / x
            want = want + (0.5 * g * hn * gate / o_pre) @ layer.ogate_preact.weight
    torch.testing.assert_close(grad[0], want, atol=1e-5, rtol=1e-5)


def test_xlstm_other_layouts_are_refused_in_one_line():
    import copy

    model = tiny_model("xlstm")
    before = _hooks(model)
    del model.backbone.blocks[1].mlstm_layer.q
    with pytest.raises(UnsupportedModelError, match=r"^xLSTMForCausalLM: expected 2 mLSTM layers, found 1") as err:
        with lrp_rules(model, "cp-lrp"):
            pass
    assert "\n" not in str(err.value) and _hooks(model) == before
    model = tiny_model("xlstm")
    model.backbone.blocks[0].ffn.act_fn = None  # an MLP of another layout: refused, not left without rules
    with pytest.raises(
        UnsupportedModelError, match=r"^xLSTMForCausalLM: expected 2 gated feed-forward blocks, found 1"
    ):
        with lrp_rules(model, "cp-lrp"):
            pass
    # transformers 5.23 cannot build a fused model (its weight init fails), but a checkpoint's config may name it
    model.config = copy.copy(model.config)
    model.config.weight_mode = "fused"
    with pytest.raises(UnsupportedModelError, match=r"^xLSTMForCausalLM: xLSTM weight_mode 'fused' .* has no LRP rule"):
        with lrp_rules(model, "cp-lrp"):
            pass


# ------------------------------------------------------------------ generation
@pytest.mark.parametrize("model_type", ["recurrent_gemma", "rwkv", "xlstm"])
def test_greedy_generation_matches_the_uncached_argmax(model_type):
    """RWKV passes its cache as ``state``, xLSTM as ``cache_params``; RecurrentGemma returns none
    (its state lives in its modules and restarts on a call without a cache): each decodes right."""
    from lrp_llm.engines.generation import generate_greedy

    model = tiny_model(model_type, seed=3)
    ids = [3, 7, 1, 9, 4, 2]
    want, seq = [], list(ids)
    with torch.no_grad():
        for _ in range(5):
            want.append(int(model(torch.tensor([seq]), use_cache=False).logits[0, -1].argmax()))
            seq.append(want[-1])
    assert generate_greedy(model, ids, 5) == want


@pytest.mark.parametrize("model_type", ["recurrent_gemma", "rwkv", "xlstm"])
def test_checkpointed_relevance_equals_the_stored_one(model_type):
    """Long prompts recompute each block in the backward pass: the recurrent state must not leak between the two runs."""
    from lrp_llm.engines.causal_lm import relevance
    from tests.support.models import random_ids

    model, ids = tiny_model(model_type, dtype=torch.float64), random_ids(12)
    for method in ("attnlrp", "cp-lrp"):
        stored = relevance(model, ids, [8, 11], method=method, checkpoint=False)["relevance"]
        recomputed = relevance(model, ids, [8, 11], method=method, checkpoint=True)["relevance"]
        torch.testing.assert_close(recomputed, stored, atol=1e-12, rtol=0)
