"""Hybrid attention / state-space models (Bamba, Nemotron-H, Granite-4 hybrid, Zamba2) and Falcon-Mamba:
the mixer rules inside a hybrid against hand formulas, the forward on the rule path (no cache) unchanged,
Zamba2's MLP adapters, the layouts that are refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrp_llm.archs import get_arch
from lrp_llm.archs.mamba import is_mixer
from lrp_llm.mechanism.context import lrp_rules
from tests.support.tiny_any import tiny_model
from tests.support.tiny_mamba import scan_matrix, tiny_mamba

HYBRIDS = ("bamba", "nemotron_h", "granitemoehybrid", "zamba2", "falcon_h1")
# Falcon-H1's mixer norm variants: none (y * SiLU(z)), normalise then gate, gate then normalise
FALCON_H1_NORMS = {
    "falcon_h1": {},
    "falcon_h1-norm-before-gate": {"mamba_rms_norm": True, "mamba_norm_before_gate": True, "mamba_n_groups": 2},
    "falcon_h1-norm-after-gate": {"mamba_rms_norm": True, "mamba_norm_before_gate": False, "mamba_n_groups": 2},
}


def _mixers(model):
    return [m for m in model.modules() if is_mixer(m)]


def _conv_transpose(g_c: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The gradient at a depthwise causal conv's input for the gradient ``g_c`` at its output (batch, L, channels)."""
    w = weight[:, 0]  # (channels, k): output t reads inputs t-k+1..t
    L, k = g_c.shape[1], w.shape[1]
    g = torch.zeros_like(g_c)
    for j in range(k):
        shift = k - 1 - j
        g[:, : L - shift] += g_c[:, shift:] * w[:, j]
    return g


def _causal_conv(x: torch.Tensor, conv) -> torch.Tensor:
    k = conv.weight.shape[-1]
    out = F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, padding=k - 1, groups=x.shape[-1])
    return out[..., : x.shape[1]].transpose(1, 2)


def _ruled_mixer(model, mixer, x, rules):
    """Output and input gradient of ``mixer`` on ``x`` with the family's rules ``rules`` installed on ``model``."""
    g_out = None
    with lrp_rules(model, rules):
        xr = x.clone().requires_grad_(True)
        out = mixer(xr)  # no cache: the installed forward
        out = out[0] if isinstance(out, tuple) else out
        g_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
        (gx,) = torch.autograd.grad(out, xr, g_out)
    return out.detach(), g_out, gx


@pytest.mark.parametrize("variant", [*HYBRIDS[:-1], *FALCON_H1_NORMS])
@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_mamba2_mixer_inside_a_hybrid_is_the_hand_written_mambalrp_map(variant, rules):
    """MambaLRP on a hybrid's Mamba-2 mixer under either rule set: SiLU identity rule, the scan as an explicit
    matrix with detached dt/B/C, the D skip, the half rule on the gate, 1/rms of the gated norm detached
    (Falcon-H1: its muP multipliers as constants, the norm absent, before or after the gate)."""
    model_type = variant.split("-")[0]
    model = tiny_model(model_type, dtype=torch.float64, **FALCON_H1_NORMS.get(variant, {}))
    mixer = _mixers(model)[0]
    L = 9
    x = torch.randn(1, L, model.config.hidden_size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out, g, gx = _ruled_mixer(model, mixer, x, rules)

    E, H, P = mixer.intermediate_size, mixer.num_heads, mixer.head_dim
    G, N = mixer.n_groups, mixer.ssm_state_size
    mup = mixer.mup_vector[0, 0, :, None] if hasattr(mixer, "mup_vector") else 1.0  # Falcon-H1's muP, per channel
    w_in = mup * mixer.in_proj.weight * getattr(mixer, "ssm_in_multiplier", 1.0)  # the linear map to z, xBC, dt
    with torch.no_grad():
        z, xbc, dt = (x @ w_in.T).split([E, mixer.conv_dim, H], dim=-1)
        c = _causal_conv(xbc, mixer.conv1d)
        act = F.silu(c)
        u, B, C = act.split([E, G * N, G * N], dim=-1)
        dt = F.softplus(dt + mixer.dt_bias).repeat_interleave(P, dim=-1)
        A = (-torch.exp(mixer.A_log)).repeat_interleave(P)[:, None].expand(E, N)
        M = scan_matrix(dt, A, B.view(1, L, G, N), C.view(1, L, G, N))
        D = mixer.D.repeat_interleave(P)
        y = torch.einsum("bets,bse->bte", M, u) + u * D
        s = F.silu(z)
        norm = mixer.norm
        g_p = g @ mixer.out_proj.weight  # the gradient at out_proj's input

        def inv_rms(t):  # 1/rms over the groups, expanded to (1, L, E): a constant under the rules
            grouped = t.view(1, L, G, E // G)
            inv = torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
            return inv.expand_as(grouped).reshape(1, L, E)

        if not hasattr(norm, "weight"):  # y * SiLU(z)
            v, g_v = y, g_p
            assert torch.allclose(out, mixer.out_proj(y * s), atol=1e-10)
        elif getattr(norm, "norm_before_gate", False):  # (weight * y / rms(y)) * SiLU(z)
            v = norm.weight * y * inv_rms(y)
            assert torch.allclose(out, mixer.out_proj(v * s), atol=1e-10)
            g_v = g_p
        else:  # weight * (y SiLU(z)) / rms(y SiLU(z))
            k = norm.weight * inv_rms(y * s)
            assert torch.allclose(out, mixer.out_proj(k * y * s), atol=1e-10)
            v, g_v = y, g_p * k
        g_prod = 0.5 * g_v  # the half rule on the gate product v * SiLU(z)
        g_z = g_prod * v * s / z  # identity rule on SiLU(z)
        g_y = g_prod * s
        if hasattr(norm, "weight") and getattr(norm, "norm_before_gate", False):
            g_y = g_y * norm.weight * inv_rms(y)  # through y / rms(y) with 1/rms constant
        g_u = torch.einsum("bets,bte->bse", M, g_y) + g_y * D
        g_act = torch.cat([g_u, torch.zeros_like(B), torch.zeros_like(C)], dim=-1)  # B, C detached
        g_xbc = _conv_transpose(g_act * act / c, mixer.conv1d.weight)  # identity rule on the conv's SiLU
        g_x = torch.cat([g_z, g_xbc, torch.zeros_like(dt[..., :H])], dim=-1) @ w_in  # dt detached
    assert torch.allclose(gx, g_x, atol=1e-10)
    if mixer.in_proj.bias is None and mixer.conv1d.bias is None:
        assert torch.allclose((x * gx).sum(), (out * g).sum(), atol=1e-10)


def test_falcon_mamba_mixer_is_the_hand_written_mambalrp_map_with_its_dt_b_c_norms():
    """Falcon-Mamba's mixer: the Mamba-1 hand formula with RMS norms on dt, B and C (held constant with them)."""
    model = tiny_mamba("falcon_mamba", dtype=torch.float64)
    mixer = model.backbone.layers[0].mixer
    L = 9
    x = torch.randn(1, L, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out, g, gx = _ruled_mixer(model, mixer, x, "mambalrp")

    def rms(t, eps):  # transformers' weightless norm computes in float32, also in a float64 model
        t = t.float()
        return (t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps)).double()

    with torch.no_grad():
        xs, z = mixer.in_proj(x).chunk(2, dim=-1)
        c = _causal_conv(xs, mixer.conv1d)
        u = F.silu(c)
        n = mixer.ssm_state_size
        dt_low, B, C = torch.split(mixer.x_proj(u), [mixer.time_step_rank, n, n], dim=-1)
        eps = mixer.b_layernorm.eps
        dt = F.softplus(mixer.dt_proj(rms(dt_low, eps)))
        M = scan_matrix(dt, -torch.exp(mixer.A_log), rms(B, eps).unsqueeze(2), rms(C, eps).unsqueeze(2))
        y = torch.einsum("bets,bse->bte", M, u) + u * mixer.D
        s = F.silu(z)
        assert torch.allclose(out, mixer.out_proj(y * s), atol=1e-10)
        g_p = g @ mixer.out_proj.weight
        g_y, g_z = 0.5 * s * g_p, 0.5 * (y * s / z) * g_p
        g_u = torch.einsum("bets,bte->bse", M, g_y) + g_y * mixer.D
        g_x = torch.cat([_conv_transpose(g_u * u / c, mixer.conv1d.weight), g_z], dim=-1) @ mixer.in_proj.weight
    assert torch.allclose(gx, g_x, atol=1e-10)
    assert torch.allclose((x * gx).sum(), (out * g).sum(), atol=1e-10)


@pytest.mark.parametrize("model_type", HYBRIDS)
def test_forward_on_the_rule_path_is_unchanged_and_every_mixer_is_ruled(model_type):
    """Without a cache (as the explainers run) the mixers take the installed fast scan. Under every rule set the
    logits equal those of the same scan with plain gradients (``lrp_rules(model, None)``) within 1e-5; that scan
    equals transformers' own within float32 rounding relative to the logit scale: transformers' Mamba-2 torch
    path computes the scan in float32 (``A_log.float()``, ``hidden_states.float()``), also in a float64 model,
    while ours keeps the model's precision (its float64 result is the hand formula's to 1e-10, see above)."""
    model = tiny_model(model_type)
    ids = torch.tensor([[3, 7, 1, 9, 4, 2, 8, 5]])
    with torch.no_grad():
        reference = model(input_ids=ids, use_cache=False).logits
        with lrp_rules(model, None):
            plain = model(input_ids=ids, use_cache=False).logits
    scale = float(reference.abs().max())
    assert float((plain - reference).abs().max()) <= 1e-5 * scale
    mixers = _mixers(model)
    assert mixers
    for rules in get_arch(model).rules:
        with lrp_rules(model, rules), torch.no_grad():
            assert all("forward" in m.__dict__ for m in mixers), f"{rules}: a mixer kept its own forward"
            torch.testing.assert_close(model(input_ids=ids, use_cache=False).logits, plain, atol=1e-5, rtol=1e-5)
        assert not any("forward" in m.__dict__ for m in mixers)


def test_zamba2_mlp_adapters_share_the_up_half_rule():
    """Zamba2MLP: down(act(g) * u) with [g, u] = gate_up_proj(x) + adapter(x); under AttnLRP the gradient at x is
    W^T [0.5 u act(g)/g c_h ; 0.5 act(g) c_h] through both the projection and the adapter (c_h = down^T c)."""
    model = tiny_model("zamba2", dtype=torch.float64)
    layer = next(i for i, k in enumerate(model.config.layers_block_type) if k == "hybrid")
    mlp = model.model.layers[layer].shared_transformer.feed_forward
    adapter = mlp.gate_up_proj_adapter_list[mlp.layer_dic[layer]]
    assert isinstance(adapter, torch.nn.Sequential)
    x = torch.randn(1, 5, model.config.hidden_size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with lrp_rules(model, "attnlrp"):
        xr = x.clone().requires_grad_(True)
        out = mlp(xr, layer_idx=layer)
        c = torch.randn(out.shape, generator=torch.Generator().manual_seed(4), dtype=out.dtype)
        (gx,) = torch.autograd.grad(out, xr, c)
    with torch.no_grad():
        W = mlp.gate_up_proj.weight + adapter[1].weight @ adapter[0].weight  # the adapter is linear
        gate, up = (x @ W.T).chunk(2, dim=-1)
        act = mlp.act_fn(gate)
        torch.testing.assert_close(out, mlp.down_proj(act * up), atol=1e-10, rtol=0)
        c_h = c @ mlp.down_proj.weight
        want = torch.cat([0.5 * up * (act / gate) * c_h, 0.5 * act * c_h], dim=-1) @ W
    torch.testing.assert_close(gx, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("model_type", HYBRIDS)
def test_generation_with_the_cache_and_every_method_run(model_type):
    """Greedy generation (the cache: the original mixer forwards) gives the tokens of the no-cache forward
    (the fast scan); explanations run with every rule set and the plain-gradient methods (the fast scan)."""
    from lrp_llm.engines.causal_lm import relevance
    from lrp_llm.engines.generation import generate_greedy
    from tests.support.models import logits_of, random_ids

    model = tiny_model(model_type)
    ids = random_ids(10)
    out = generate_greedy(model, ids, 4)
    seq = list(ids)
    for _ in range(4):
        seq.append(int(logits_of(model, seq)[0, -1].argmax()))
    assert out == seq[10:]
    for method in (*get_arch(model).rules, "grad-x-input", "integrated-gradients"):
        r = relevance(model, ids, [9], method=method, steps=4)
        assert torch.isfinite(r["relevance"]).all() and r["relevance"].abs().sum() > 0, method
