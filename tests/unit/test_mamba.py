"""MambaLRP on Mamba and Mamba-2: each rule against a hand formula, the fast scan against
the step-by-step recurrence, conservation, forward invariance and restoration."""

import pytest
import torch
import torch.nn.functional as F

from lrp_llm.archs import get_arch
from lrp_llm.archs.mamba import _gate, mamba_mixer_forward
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.engines.explain import explain
from lrp_llm.errors import Cancelled, InputError
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.mechanism.ssm_scan import selective_scan, selective_scan_reference
from tests.support.models import cancel_after, logits_of, model_state, random_ids
from tests.support.tiny_mamba import MAMBA_FAMILIES, scan_matrix, tiny_mamba


def _scan_inputs(b=2, L=23, E=8, N=4, G=1, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, L, E, generator=g, dtype=dtype)
    dt = torch.rand(b, L, E, generator=g, dtype=dtype) * 0.5 + 0.01
    A = -torch.rand(E, N, generator=g, dtype=dtype) * 3 - 0.1
    B = torch.randn(b, L, G, N, generator=g, dtype=dtype)
    C = torch.randn(b, L, G, N, generator=g, dtype=dtype)
    return u, dt, A, B, C


# ------------------------------------------------------------------------------ scan
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_fast_scan_equals_the_recurrence_and_its_gradients(groups, chunk):
    u, dt, A, B, C = (t.requires_grad_(True) for t in _scan_inputs(G=groups))
    y = selective_scan(u, dt, A, B, C, chunk=chunk)
    ref = selective_scan_reference(u, dt, A, B, C)
    assert (y - ref).abs().max() < 1e-12
    gy = torch.randn_like(y)
    fast = torch.autograd.grad(y, (u, dt, A, B, C), gy)
    slow = torch.autograd.grad(ref, (u, dt, A, B, C), gy)
    for a, b in zip(fast, slow):
        assert (a - b).abs().max() < 1e-10


def test_fast_scan_passes_gradcheck():
    inputs = tuple(t.requires_grad_(True) for t in _scan_inputs(b=1, L=9, E=4, N=3, G=2))
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk=4), inputs)


def test_scan_with_detached_parameters_is_the_hand_written_linear_map():
    u, dt, A, B, C = _scan_inputs(b=1, L=7, E=4, N=3, G=2)
    u.requires_grad_(True)
    M = scan_matrix(dt, A, B, C)
    y = selective_scan(u, dt, A, B, C, chunk=3)
    assert torch.allclose(y, torch.einsum("bets,bse->bte", M, u), atol=1e-12)
    gy = torch.randn_like(y)
    (gu,) = torch.autograd.grad(y, u, gy)
    assert torch.allclose(gu, torch.einsum("bets,bte->bse", M, gy), atol=1e-12)
    # linear in u: relevance u * grad sums to <y, gy>
    assert torch.allclose((u * gu).sum(), (y * gy).sum(), atol=1e-12)


def test_float32_scan_matches_float64_and_keeps_dtype():
    u, dt, A, B, C = _scan_inputs(L=300)
    y32 = selective_scan(*(t.float() for t in (u, dt, A, B, C)))
    assert y32.dtype == torch.float32
    assert (y32.double() - selective_scan(u, dt, A, B, C)).abs().max() < 1e-4


def test_empty_sequence_and_bad_shapes():
    u, dt, A, B, C = _scan_inputs(L=0)
    assert selective_scan(u, dt, A, B, C).shape == (2, 0, 8)
    u, dt, A, B, C = _scan_inputs()
    with pytest.raises(ValueError):
        selective_scan(u, dt[:, :-1], A, B, C)


# ----------------------------------------------------------------------------- rules
def test_gate_half_rule_hand_formula():
    g = torch.Generator().manual_seed(3)
    y = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    out = _gate(y, z, rules=True)
    assert torch.equal(out, y * F.silu(z))
    grad_out = torch.randn(5, 7, generator=g, dtype=torch.float64)
    gy, gz = torch.autograd.grad(out, (y, z), grad_out)
    s = F.silu(z)
    assert torch.allclose(gy, 0.5 * s * grad_out)
    assert torch.allclose(gz, 0.5 * y * s / z * grad_out)
    # each factor receives half of the product's relevance, element by element
    assert torch.allclose(y * gy, 0.5 * out * grad_out)
    assert torch.allclose(z * gz, 0.5 * out * grad_out)


def _mixer_relevance(model, x, rules: bool):
    mixer = model.backbone.layers[0].mixer
    x = x.clone().requires_grad_(True)
    out = mamba_mixer_forward(mixer, x, rules)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype)
    (gx,) = torch.autograd.grad(out, x, g)
    return out, g, gx


def test_mamba_mixer_under_rules_is_the_hand_written_mambalrp_map():
    """Mixer relevance = hand formula: identity rule on SiLU, scan as the explicit matrix with
    detached dt/B/C, D skip, half rule on the gate, projections linear."""
    model = tiny_mamba("mamba", dtype=torch.float64)
    mixer = model.backbone.layers[0].mixer
    x = torch.randn(1, 9, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out, g, gx = _mixer_relevance(model, x, rules=True)

    # hand formula, all as explicit linear maps around the detached quantities
    with torch.no_grad():
        xs, z = mixer.in_proj(x).chunk(2, dim=-1)
        conv = F.conv1d(xs.transpose(1, 2), mixer.conv1d.weight, None, padding=3, groups=xs.shape[-1])[..., :9]
        c = conv.transpose(1, 2)
        u = F.silu(c)
        dt_low, B, C = torch.split(mixer.x_proj(u), [4, 4, 4], dim=-1)
        dt = F.softplus(mixer.dt_proj(dt_low))
        A = -torch.exp(mixer.A_log)
        M = scan_matrix(dt, A, B.unsqueeze(2), C.unsqueeze(2))
        y = torch.einsum("bets,bse->bte", M, u) + u * mixer.D
        s = F.silu(z)
        assert torch.allclose(out, mixer.out_proj(y * s), atol=1e-10)
        g_p = g @ mixer.out_proj.weight  # gradient at the gate product y * s
        g_y = 0.5 * s * g_p
        g_z = 0.5 * (y * s / z) * g_p  # identity rule on SiLU(z), half of the product
        g_u = torch.einsum("bets,bte->bse", M, g_y) + g_y * mixer.D
        g_c = g_u * u / c  # identity rule on the conv's SiLU
        w = mixer.conv1d.weight[:, 0]  # (E, k): conv output t reads inputs t-3..t
        g_xs = torch.zeros_like(g_c)
        for j in range(w.shape[1]):
            shift = w.shape[1] - 1 - j
            g_xs[:, : 9 - shift] += g_c[:, shift:] * w[:, j]
        g_x = torch.cat([g_xs, g_z], dim=-1) @ mixer.in_proj.weight
    assert torch.allclose(gx, g_x, atol=1e-10)
    # bias-free: the mixer conserves relevance
    assert torch.allclose((x * gx).sum(), (out * g).sum(), atol=1e-10)


def test_mamba2_gated_norm_half_rule_and_detached_rms():
    model = tiny_mamba("mamba2", dtype=torch.float64)
    mixer = model.backbone.layers[0].mixer
    captured = {}

    def spy(module, args, output):
        captured["in"] = args[0]

    handle = mixer.out_proj.register_forward_hook(spy)
    x = torch.randn(1, 11, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64, requires_grad=True)
    from lrp_llm.archs.mamba import mamba2_mixer_forward

    out = mamba2_mixer_forward(mixer, x, True)
    handle.remove()
    normed = captured["in"]
    # the reference gated norm gives the same value
    E, G = mixer.intermediate_size, mixer.n_groups
    assert normed.shape[-1] == E
    g_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(6), dtype=out.dtype)
    (g_normed,) = torch.autograd.grad(out, normed, g_out, retain_graph=True)
    (gx,) = torch.autograd.grad(out, x, g_out)
    assert torch.allclose((x * gx).sum(), (out * g_out).sum(), atol=1e-10)
    # detached 1/rms: relevance entering the norm output equals relevance of the gated product
    assert torch.allclose((normed * g_normed).sum(), (out * g_out).sum(), atol=1e-10)
    assert G == 2


@pytest.mark.parametrize("family", MAMBA_FAMILIES)
def test_block_rmsnorm_has_detached_scale(family):
    model = tiny_mamba(family, dtype=torch.float64)
    norm = model.backbone.norm_f
    h = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    with lrp_rules(model, "mambalrp"):
        out = norm(h)
    g = torch.randn_like(out)
    (gh,) = torch.autograd.grad(out, h, g)
    inv = torch.rsqrt(h.detach().pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    assert torch.allclose(out, norm.weight * h * inv)
    assert torch.allclose(gh, norm.weight * inv * g)


# ------------------------------------------------------------------ whole models
@pytest.mark.parametrize("family", MAMBA_FAMILIES)
def test_conservation_float64_bias_free(family):
    model = tiny_mamba(family, dtype=torch.float64, layers=3)
    ids = random_ids(40)
    out = relevance(model, ids, [9, 25, 39], method="mambalrp")
    total = out["relevance"].sum(-1)
    rel_err = ((total - out["logits"]) / out["logits"]).abs().max()
    assert rel_err < 1e-4


@pytest.mark.parametrize("family", MAMBA_FAMILIES)
def test_biases_absorb_relevance_so_the_check_is_not_trivial(family):
    model = tiny_mamba(family, dtype=torch.float64, bias=True)
    ids = random_ids(30)
    out = relevance(model, ids, [29], method="mambalrp")
    assert abs(float(out["relevance"].sum() / out["logits"][0]) - 1.0) > 1e-3


@pytest.mark.parametrize("family", MAMBA_FAMILIES)
@pytest.mark.parametrize("rules", ["mambalrp", None])
def test_forward_under_the_fast_path_gives_the_reference_logits(family, rules):
    model = tiny_mamba(family, bias=True)
    ids = random_ids(300)  # several scan chunks
    before = logits_of(model, ids)
    with lrp_rules(model, rules):
        during = logits_of(model, ids)
    after = logits_of(model, ids)
    assert (during - before).abs().max() <= 1e-5
    assert torch.equal(after, before)


@pytest.mark.parametrize("family", MAMBA_FAMILIES)
def test_grad_x_input_on_the_fast_path_equals_the_reference_gradient(family):
    model = tiny_mamba(family, dtype=torch.float64, bias=True)
    ids = random_ids(50)
    fast = relevance(model, ids, [49], method="grad-x-input")["relevance"][0]
    embeds = model.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
    logit = model(inputs_embeds=embeds, use_cache=False).logits[0, 48, ids[49]]
    (grad,) = torch.autograd.grad(logit, embeds)
    reference = (embeds * grad).sum(-1)[0, :49].detach()
    # transformers keeps A (Mamba) and the whole scan (Mamba-2) in float32 even for float64 weights
    assert (fast[:49] - reference).abs().max() <= 1e-5 * reference.abs().max()


@pytest.mark.parametrize("family", MAMBA_FAMILIES)
def test_restored_after_use_and_after_an_exception(family):
    model = tiny_mamba(family)
    model.train()
    reference = model_state(model)
    with pytest.raises(RuntimeError, match="boom"):
        with lrp_rules(model, "mambalrp"):
            assert model_state(model) != reference
            raise RuntimeError("boom")
    assert model_state(model) == reference
    with pytest.raises(Cancelled):
        relevance(model, random_ids(12), [9, 10, 11], method="mambalrp", should_cancel=cancel_after(1))
    assert model_state(model) == reference


def test_a_second_model_is_untouched():
    explained, other = tiny_mamba("mamba", seed=0), tiny_mamba("mamba", seed=1)
    ids = random_ids(20)
    expected = logits_of(other, ids)
    with lrp_rules(explained, "mambalrp"):
        assert model_state(other)[1] == []
        assert torch.equal(logits_of(other, ids), expected)
        # its backward is the plain gradient: no rule leaked into the other instance
        e = other.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
        logit = other(inputs_embeds=e, use_cache=False).logits[0, -1, 5]
        (g,) = torch.autograd.grad(logit, e)
    e2 = e.detach().clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(other(inputs_embeds=e2, use_cache=False).logits[0, -1, 5], e2)
    assert torch.equal(g, g2)


def test_methods_available_on_mamba():
    model = tiny_mamba("mamba")
    spec = get_arch(model)
    assert spec.rules == ("mambalrp",) and spec.default_method == "mambalrp"
    ids = random_ids(15)
    with pytest.raises(InputError, match="not available for mamba"):
        relevance(model, ids, [14], method="attnlrp")
    for method in ("grad-x-input", "saliency", "integrated-gradients", "random"):
        out = relevance(model, ids, [14], method=method, steps=4)
        assert torch.isfinite(out["relevance"]).all()


def test_explain_defaults_to_mambalrp():
    from tests.support.models import tiny_tokenizer

    model = tiny_mamba("mamba2", vocab=len(tiny_tokenizer()))
    a = explain(model, tiny_tokenizer(), "the capital of france is", generate=3)
    assert a.method == "mambalrp" and a.meta["rules"] == "mambalrp"
    assert len(a.targets) >= 1
    assert all(abs(t.conservation - 1) < 1e-2 for t in a.targets)  # float32, small biases


@pytest.mark.parametrize("family", MAMBA_FAMILIES)
def test_greedy_generation_uses_the_state_cache_correctly(family):
    from lrp_llm.engines.generation import generate_greedy

    model = tiny_mamba(family)
    ids = random_ids(10)
    out = generate_greedy(model, ids, 6)
    seq = list(ids)
    for _ in range(6):  # no cache: the whole sequence each step
        seq.append(int(logits_of(model, seq)[0, -1].argmax()))
    assert out == seq[10:]
