"""Sweeps: the fast engines agree with one forward per variant through ``intervene``;
invariants any correct sweep has; metrics by hand; attribution patching by hand."""

import numpy as np
import pytest
import torch

from lrp_llm.errors import InputError
from patching import add, attribution_patching, intervene, run_with_cache, sweep
from patching.metrics import Reference
from patching.relp import backward_rules, pearson
from patching.stepper import LayerStepper, StepperUnsupported
from tests.support.models import random_ids, tiny_causal_lm

T = 7
CLEAN = random_ids(T, seed=4)
CORRUPTED = [*CLEAN[:2], 9, CLEAN[3], 11, *CLEAN[5:]]  # differs at positions 2 and 4
A, W = 5, 6


@pytest.mark.parametrize(
    "family,attn,extra",
    [
        ("llama", "sdpa", {}),
        ("llama", "eager", {}),
        ("qwen2", "sdpa", {}),
        ("gemma2", "eager", {"sliding_window": 3}),
        ("gemma3_text", "sdpa", {"sliding_window": 3}),
    ],
)
def test_engines_agree_with_one_forward_per_variant(family, attn, extra):
    model = tiny_causal_lm(family, layers=2, attn=attn, **extra)
    kinds = ("resid", "attn", "mlp", "head")
    directions = ("denoise", "noise") if (family, attn) == ("llama", "sdpa") else ("denoise",)
    for direction in directions:
        kw = dict(kinds=kinds, direction=direction, positions=[2, 4, 6], head_positions=[3, 4, 5])
        naive = sweep(model, CLEAN, CORRUPTED, A, W, engine="naive", **kw)
        for engine in ("stepper", "batched"):
            fast = sweep(model, CLEAN, CORRUPTED, A, W, engine=engine, max_tokens=12, **kw)
            assert fast.engine == engine
            for key, want in naive.values.items():
                np.testing.assert_allclose(fast.values[key], want, atol=1e-4, rtol=0, err_msg=f"{engine} {key}")


def test_sweep_invariants():
    model = tiny_causal_lm("llama", layers=3, dtype=torch.float64)
    out = sweep(model, CLEAN, CORRUPTED, A, W, kinds=("resid", "attn", "mlp"), metrics=("logit_diff", "recovery", "kl"))
    ref = out.reference
    rec = out.values[("resid", "recovery")]
    kl = out.values[("resid", "kl")]
    # the last layer's residual at the last position is everything the head sees: full recovery, KL 0
    assert rec[-1, -1] == pytest.approx(1.0, abs=1e-6)  # (grids are float32)
    assert kl[-1, -1] == pytest.approx(0.0, abs=1e-6)
    # positions where the prompts agree carry identical activations: patching them changes nothing
    for kind in ("resid", "attn", "mlp"):
        np.testing.assert_allclose(out.values[(kind, "logit_diff")][:, :2], ref.corrupted_logit_diff, atol=1e-5)
    assert np.abs(rec[:, 2]).max() > 0.01  # where they differ, it does
    noise = sweep(model, CLEAN, CORRUPTED, A, W, kinds=("resid",), direction="noise")
    assert noise.values[("resid", "recovery")][-1, -1] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(noise.values[("resid", "recovery")][:, :2], 1.0, atol=1e-6)


def test_metrics_by_hand():
    clean = torch.tensor([1.0, 3.0, -1.0, 0.5], dtype=torch.float64)
    corrupted = torch.tensor([2.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    ref = Reference.from_logits(clean, corrupted, 1, 2)
    assert ref.clean_logit_diff == 4.0 and ref.corrupted_logit_diff == -1.0
    assert float(ref.recovery(torch.tensor([1.5], dtype=torch.float64))[0]) == pytest.approx(0.5)
    patched = torch.tensor([[0.0, 1.0, 0.0, 2.0]], dtype=torch.float64)
    p, q = torch.softmax(clean, -1), torch.softmax(patched[0], -1)
    assert float(ref.kl(patched)[0]) == pytest.approx(float((p * (p / q).log()).sum()))
    assert float(ref.kl(clean[None])[0]) == pytest.approx(0.0, abs=1e-12)


def test_sweep_errors_and_fallback(monkeypatch):
    model = tiny_causal_lm("llama", layers=2)
    with pytest.raises(InputError, match="same number of tokens"):
        sweep(model, CLEAN, CLEAN[:-1], A, W)
    with pytest.raises(InputError, match="direction"):
        sweep(model, CLEAN, CORRUPTED, A, W, direction="sideways")
    with pytest.raises(InputError, match="mixer"):
        sweep(model, CLEAN, CORRUPTED, A, W, kinds=("mixer",))

    def refuse(self):
        raise StepperUnsupported("test")

    monkeypatch.setattr(LayerStepper, "verify", refuse)
    assert sweep(model, CLEAN, CORRUPTED, A, W, kinds=("resid",)).engine == "batched"
    with pytest.raises(StepperUnsupported):
        sweep(model, CLEAN, CORRUPTED, A, W, kinds=("resid",), engine="stepper")


def test_cancel_and_progress():
    from lrp_llm.errors import Cancelled

    model = tiny_causal_lm("llama", layers=2)
    seen = []
    sweep(model, CLEAN, CORRUPTED, A, W, kinds=("resid",), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (2 * T, 2 * T) and all(a <= b for (a, _), (b, _) in zip(seen, seen[1:]))
    with pytest.raises(Cancelled):
        sweep(model, CLEAN, CORRUPTED, A, W, kinds=("resid",), should_cancel=lambda: True)


def test_mamba_mixer_sweep_batched_equals_naive():
    from tests.support.tiny_mamba import tiny_mamba

    model = tiny_mamba("mamba", layers=2)
    naive = sweep(model, CLEAN, CORRUPTED, A, W, kinds=("resid", "mixer"), engine="naive")
    fast = sweep(model, CLEAN, CORRUPTED, A, W, kinds=("resid", "mixer"))
    assert fast.engine == "batched"
    for key, want in naive.values.items():
        np.testing.assert_allclose(fast.values[key], want, atol=1e-4, rtol=0)


# ------------------------------------------------------------------ attribution patching
def _metric(model, ids, edits=()):
    with torch.no_grad(), intervene(model, *edits):
        lg = model(torch.tensor([ids])).logits[0, -1]
    return float(lg[A] - lg[W])


def _derivative(model, site, delta, positions=None):
    """d/dt metric(site + t * delta) at t = 0: central differences with Richardson extrapolation
    (the models' RMSNorm computes in float32, so t cannot be tiny)."""

    def central(t):
        up = _metric(model, CORRUPTED, [add(site, t * delta, positions=positions)])
        down = _metric(model, CORRUPTED, [add(site, -t * delta, positions=positions)])
        return (up - down) / (2 * t)

    return (4 * central(0.01) - central(0.02)) / 3


def test_atp_is_the_directional_derivative():
    """Plain AtP = d/dt metric(base + t * (source - base) at one site) at t = 0."""
    model = tiny_causal_lm("llama", layers=2, dtype=torch.float64)
    est = attribution_patching(model, CLEAN, CORRUPTED, A, W, method="atp", kinds=("resid", "mlp", "head"))
    base = _metric(model, CORRUPTED)
    sites = ["layer.0.resid", "layer.1.mlp", "layer.1.attn.head.3"]
    _, src = run_with_cache(model, CLEAN, sites)
    _, cor = run_with_cache(model, CORRUPTED, sites)
    for site, key, cell in (("layer.0.resid", "resid", (0, 2)), ("layer.1.mlp", "mlp", (1, 4))):
        delta = src[site][0, cell[1]] - cor[site][0, cell[1]]
        want = _derivative(model, site, delta, positions=[cell[1]])
        assert est.values[(key, "logit_diff")][cell] - base == pytest.approx(want, rel=2e-3)
    site = "layer.1.attn.head.3"  # a head is patched at every position at once
    want = _derivative(model, site, (src[site] - cor[site])[0])
    assert est.values[("head", "logit_diff")][1, 3] - base == pytest.approx(want, rel=2e-3)


def test_relp_last_residual_by_hand_and_one_backward():
    """At the last residual, RelP's coefficient is the head row times the final norm's weight over
    the base run's rms (the norm's scale held constant) -- written out here by hand."""
    model = tiny_causal_lm("llama", layers=2, dtype=torch.float64)
    calls = []
    handle = model.lm_head.register_forward_hook(lambda *_: calls.append(1))
    try:
        est = attribution_patching(model, CLEAN, CORRUPTED, A, W, method="relp", kinds=("resid",))
    finally:
        handle.remove()
    assert len(calls) == 2  # two forward passes (and one autograd.grad call) for every site
    _, src = run_with_cache(model, CLEAN, ["layer.1.resid"])
    _, cor = run_with_cache(model, CORRUPTED, ["layer.1.resid"])
    x = cor["layer.1.resid"][0, -1]
    norm = model.model.norm
    rms = torch.sqrt(x.pow(2).mean() + norm.variance_epsilon)
    coef = (model.lm_head.weight[A] - model.lm_head.weight[W]) * norm.weight / rms
    want = float(((src["layer.1.resid"][0, -1] - x) * coef).sum().detach())
    base = _metric(model, CORRUPTED)
    assert est.values[("resid", "logit_diff")][1, -1] - base == pytest.approx(want, rel=1e-6)  # float32 grid


def test_relp_rules_differ_from_plain_gradient_and_restore():
    model = tiny_causal_lm("llama", layers=2, dtype=torch.float64)
    ids = torch.tensor([CORRUPTED])
    plain = model(ids).logits
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    with backward_rules(model, "relp"):
        torch.testing.assert_close(model(ids).logits, plain, atol=1e-5, rtol=0)  # the forward is unchanged
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks
    relp = attribution_patching(model, CLEAN, CORRUPTED, A, W, method="relp", kinds=("mlp",))
    atp = attribution_patching(model, CLEAN, CORRUPTED, A, W, method="atp", kinds=("mlp",))
    assert np.abs(relp.values[("mlp", "logit_diff")] - atp.values[("mlp", "logit_diff")]).max() > 1e-3


def test_pearson():
    a = np.array([[1.0, 2.0], [3.0, np.nan]])
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    assert np.isnan(pearson(np.ones(3), np.arange(3.0)))


def test_relp_on_mamba_uses_its_own_rules():
    from tests.support.tiny_mamba import tiny_mamba

    model = tiny_mamba("mamba", layers=2, dtype=torch.float64)
    relp = attribution_patching(model, CLEAN, CORRUPTED, A, W, method="relp", kinds=("resid", "mixer"))
    atp = attribution_patching(model, CLEAN, CORRUPTED, A, W, method="atp", kinds=("resid", "mixer"))
    for key in relp.values:
        assert np.isfinite(relp.values[key]).all()
    assert np.abs(relp.values[("mixer", "logit_diff")] - atp.values[("mixer", "logit_diff")]).max() > 1e-6
    # positions where the prompts agree: no change predicted
    np.testing.assert_allclose(
        relp.values[("resid", "logit_diff")][:, :2], relp.reference.corrupted_logit_diff, atol=1e-6
    )
