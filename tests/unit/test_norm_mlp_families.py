"""The Llama-attention families with other norms or MLPs (Cohere, OLMo-1, StableLM, GLM, Arcee, Apertus,
NanoChat, Jais-2, Nemotron, Persimmon, ModernBERT-decoder, Moshi, Doge): their new parts' rules against
hand formulas in float64, and the layouts the conformance suite's default configs do not reach."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_llm.archs.blocks import install_mlps, install_norms
from lrp_llm.archs.description import AttentionParts, MLPParts, NormParts, TransformerParts
from lrp_llm.archs.layer_norm import layer_norm_convention
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.mechanism.patch import ModelPatch
from tests.support.conformance import without_biases_and_position_embeddings
from tests.support.models import random_ids
from tests.support.tiny_any import tiny_model

D = 6


def _seeded(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ LayerNorm variants
def _cohere_norm(shape=(D,)):
    from transformers.models.cohere.modeling_cohere import CohereLayerNorm

    return CohereLayerNorm(shape, eps=1e-5)


def _olmo_norm():
    from transformers.models.olmo.modeling_olmo import OlmoLayerNorm

    return OlmoLayerNorm(D)


def _nemotron_norm():
    from transformers.models.nemotron.modeling_nemotron import NemotronLayerNorm1P

    return NemotronLayerNorm1P(D, eps=1e-5)


# (constructor, offset the rule must read, has a bias)
NORMS = {
    "nn.LayerNorm": (lambda: nn.LayerNorm(D, eps=1e-5), 0.0, True),
    "nn.LayerNorm without bias": (lambda: nn.LayerNorm(D, eps=1e-6, bias=False), 0.0, False),
    "CohereLayerNorm": (_cohere_norm, 0.0, False),
    "OlmoLayerNorm": (_olmo_norm, 0.0, False),
    "NemotronLayerNorm1P": (_nemotron_norm, 1.0, True),
}


def _randomised(norm: nn.Module) -> nn.Module:
    norm = norm.double()
    with torch.no_grad():
        for i, p in enumerate(norm.parameters()):
            p.copy_(_seeded(*p.shape, seed=20 + i, scale=0.5) + (0.0 if p.dim() == 0 else 0.3))
    return norm


@pytest.mark.parametrize("name", list(NORMS))
def test_layer_norm_variants_detach_one_over_sigma(name):
    """y = (x - mean) / sigma * (offset + w) + b with sigma constant: the gradient is (g - mean(g)) / sigma,
    g = cot * (offset + w); the forward is the module's own; without bias, x . grad = y . cot."""
    make, offset, has_bias = NORMS[name]
    norm = _randomised(make())
    eps = 1e-6 if "without bias" in name else 1e-5
    assert layer_norm_convention(norm).offset == offset and layer_norm_convention(norm).eps == eps
    x, cot = _seeded(3, D, seed=1, scale=2.0), _seeded(3, D, seed=2)
    with torch.no_grad():
        plain = norm(x)
    with ModelPatch(norm) as patch:
        install_norms(patch, [norm], NormParts(kind="layer", class_suffix="Norm"))
        xr = x.clone().requires_grad_(True)
        out = norm(xr)
        (grad,) = torch.autograd.grad((out * cot).sum(), xr)
    assert "forward" not in norm.__dict__  # restored
    # the module computes in float32 (Cohere, OLMo); the rule in float64
    torch.testing.assert_close(out, plain, atol=1e-6, rtol=1e-6)
    centred = x - x.mean(-1, keepdim=True)
    sigma = torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps)
    weight = getattr(norm, "weight", None)
    g = cot * (offset + weight) if weight is not None else cot
    want = (g - g.mean(-1, keepdim=True)) / sigma
    torch.testing.assert_close(grad, want, atol=1e-12, rtol=0)
    bias = getattr(norm, "bias", None)
    assert (bias is not None) == has_bias
    if bias is None:
        torch.testing.assert_close((x * grad).sum(), (out * cot).sum(), atol=1e-12, rtol=0)


def test_cohere_per_head_norm_detaches_one_over_sigma_per_head():
    """Cohere's Q/K norm: weight (heads, head_dim), the statistics over head_dim only."""
    norm = _randomised(_cohere_norm((2, 3)))
    x, cot = _seeded(4, 2, 3, seed=3), _seeded(4, 2, 3, seed=4)
    with ModelPatch(norm) as patch:
        install_norms(patch, [norm], NormParts(kind="layer", class_suffix="Norm"))
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((norm(xr) * cot).sum(), xr)
    sigma = torch.sqrt((x - x.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True) + 1e-5)
    g = cot * norm.weight
    torch.testing.assert_close(grad, (g - g.mean(-1, keepdim=True)) / sigma, atol=1e-12, rtol=0)


class _NotALayerNorm(nn.Module):
    """Named like a LayerNorm, but computes an RMSNorm (no mean removed)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(D, dtype=torch.float64))
        self.eps = 1e-5

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def test_a_norm_the_layer_norm_formula_does_not_reproduce_is_refused_naming_it():
    norm = _NotALayerNorm()
    with pytest.raises(UnsupportedModelError, match=r"^_NotALayerNorm: its output is not .*not supported$"):
        with ModelPatch(norm) as patch:
            install_norms(patch, [norm], NormParts(kind="layer", class_suffix="LayerNorm"))
    assert "forward" not in norm.__dict__


def test_a_wrong_eps_is_refused():
    """eps is read from the module; the probe's small-scale row makes a wrong one visible."""
    norm = _olmo_norm()

    class _OtherEps(type(norm)):
        def forward(self, x):
            return nn.functional.layer_norm(x, self.normalized_shape, None, None, eps=1e-2)

    with pytest.raises(UnsupportedModelError, match="_OtherEps"):
        layer_norm_convention(_OtherEps(D))


# ------------------------------------------------------------------ non-gated MLP activations
def _relu2():
    from transformers.activations import ReLUSquaredActivation

    return ReLUSquaredActivation()


def _xielu():
    from transformers.activations import XIELUActivation

    return XIELUActivation(dtype=torch.float64)


def _xielu_hand(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """xIELU (Huang 2024): alpha_p x^2 + beta x for x > 0, alpha_n (expm1(min(x, eps)) - x) + beta x otherwise."""
    alpha_p = nn.functional.softplus(act.alpha_p)
    alpha_n = act.beta + nn.functional.softplus(act.alpha_n)
    neg = alpha_n * (torch.expm1(torch.clamp(x, max=act._eps_scalar)) - x) + act.beta * x
    return torch.where(x > 0, alpha_p * x * x + act.beta * x, neg)


ACTIVATIONS = {
    "relu^2": (_relu2, lambda _act, x: torch.relu(x) ** 2),
    "xielu": (_xielu, _xielu_hand),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_plain_mlp_activation_keeps_its_forward_and_passes_relevance_whole(name, rules):
    """The identity rule: value f(x) (the module's own), gradient cot * f(x) / x, so x . grad = f(x) . cot."""
    make, hand = ACTIVATIONS[name]
    mlp = nn.Module()
    mlp.up_proj, mlp.down_proj, mlp.act_fn = nn.Linear(3, D).double(), nn.Linear(D, 3).double(), make()
    parts = TransformerParts(
        attention=AttentionParts(q="q", k="k", v="v"),
        mlps=(MLPParts(up="up_proj", act="act_fn", down="down_proj"),),
        norm=NormParts(kind="layer", class_suffix="LayerNorm"),
    )
    x, cot = _seeded(4, D, seed=5, scale=2.0), _seeded(4, D, seed=6)
    with torch.no_grad():
        plain = mlp.act_fn(x)
    torch.testing.assert_close(plain, hand(mlp.act_fn, x), atol=1e-12, rtol=0)
    with ModelPatch(mlp) as patch:
        install_mlps(patch, mlp, parts, rules)
        xr = x.clone().requires_grad_(True)
        out = mlp.act_fn(xr)
        (grad,) = torch.autograd.grad((out * cot).sum(), xr)
    assert not mlp.act_fn._forward_hooks
    torch.testing.assert_close(out, plain, atol=0, rtol=0)
    torch.testing.assert_close(grad, cot * plain / x, atol=1e-12, rtol=0)
    torch.testing.assert_close((x * grad).sum(), (plain * cot).sum(), atol=1e-12, rtol=0)


# ------------------------------------------------------------------ layouts beyond the suite's defaults
def _check_family(model_type: str, **overrides) -> None:
    """Forward unchanged under every rule set; CP-LRP conserves on the bias-free float64 copy."""
    from lrp_llm.archs import get_arch
    from lrp_llm.engines.causal_lm import relevance

    model = tiny_model(model_type, **overrides)
    ids = torch.tensor([random_ids(9)])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    spec = get_arch(model)
    for rules in (*spec.rules, *spec.patching_rules):
        with lrp_rules(model, rules), torch.no_grad():
            torch.testing.assert_close(model(input_ids=ids).logits, plain, atol=1e-5, rtol=1e-5)
    model = without_biases_and_position_embeddings(tiny_model(model_type, dtype=torch.float64, **overrides))
    out = relevance(model, random_ids(12), [8, 11], method="cp-lrp")
    for i in range(2):
        ratio = float(out["relevance"][i].sum() / out["logits"][i])
        assert abs(ratio - 1.0) < 1e-4, f"{model_type} {overrides}: relevance sums to {ratio}"


@pytest.mark.parametrize(
    "model_type,overrides",
    [
        ("stablelm", {"use_parallel_residual": True, "qk_layernorm": True}),
        ("stablelm", {"use_qkv_bias": True}),
        ("cohere", {"use_qk_norm": True}),
        ("persimmon", {"qk_layernorm": False}),
        ("nemotron", {"partial_rotary_factor": 0.5}),
        ("nanochat", {"final_logit_softcapping": 3.0}),
    ],
)
def test_layouts_beyond_the_default_config(model_type, overrides):
    _check_family(model_type, **overrides)


def test_olmo_clip_qkv_clamp_gets_the_identity_rule():
    """With clip_qkv small enough to clip, the clamp would drop the relevance of the clipped part;
    under the identity rule CP-LRP still conserves, and the forward is unchanged."""
    model = tiny_model("olmo", dtype=torch.float64, clip_qkv=0.5)
    seen = []
    handle = model.model.layers[0].self_attn.v_proj.register_forward_hook(
        lambda _m, _a, out: seen.append(float(out.abs().max()))
    )
    with torch.no_grad():
        model(input_ids=torch.tensor([random_ids(9)]))
    handle.remove()
    assert seen[0] > 0.5, "the probe must clip"
    _check_family("olmo", clip_qkv=0.5)


def test_olmo_clamp_rule_by_hand():
    """The hook's rule: value clamp(x), gradient cot * clamp(x) / x."""
    from lrp_llm.archs.olmo import clamp_identity

    proj = nn.Linear(3, D).double()
    x, cot = _seeded(5, 3, seed=7, scale=2.0), _seeded(5, D, seed=8)
    with ModelPatch(proj) as patch:
        patch.hook_output(proj, clamp_identity(0.5))
        xr = x.clone().requires_grad_(True)
        h = proj(xr)
        h.clamp_(-0.5, 0.5)  # the model's own in-place clamp after the projection
        (grad,) = torch.autograd.grad((h * cot).sum(), xr)
    with torch.no_grad():
        raw = proj(x)
    clipped = raw.clamp(-0.5, 0.5)
    assert (clipped != raw).any()
    torch.testing.assert_close(h.detach(), clipped, atol=0, rtol=0)
    torch.testing.assert_close(grad, (cot * clipped / raw) @ proj.weight, atol=1e-12, rtol=0)


def test_modernbert_decoder_prediction_head_activation_is_ruled():
    """The head's norm(act(dense(h))) sits between the final norm and the vocabulary: its activation
    is found as an MLP without a down projection and gets the identity rule."""
    from lrp_llm.archs.blocks import find_parts
    from lrp_llm.archs.modernbert_decoder import MODERNBERT_DECODER_FAMILY

    model = tiny_model("modernbert-decoder")
    found = find_parts(model, MODERNBERT_DECODER_FAMILY.parts)
    assert any(m is model.lm_head for m in found["mlps"])
    assert len(found["gated_mlps"]) == model.config.num_hidden_layers


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_doge_dynamic_mask_is_held_constant(rules):
    """The mask exp(A * softplus(dt_proj(v))) enters the scores: constant under every rule set
    (without that, CP-LRP's relevance sums to 1.18 of the logit on the bias-free copy)."""
    model = tiny_model("doge")
    flags = []
    with lrp_rules(model, rules):
        # registered after the rules' hook, so it sees what the attention module receives
        handle = model.model.layers[0].self_attn.dt_proj.register_forward_hook(
            lambda _m, _a, out: flags.append(out.requires_grad)
        )
        model(inputs_embeds=model.get_input_embeddings()(torch.tensor([random_ids(6)])).detach().requires_grad_(True))
        handle.remove()
    assert flags == [False]


def test_doge_mixture_of_experts_is_refused_naming_it():
    model = tiny_model("doge", is_moe=True)
    with pytest.raises(UnsupportedModelError, match=r"^doge with is_moe=True: .*DogeCDMoE.*supported$"):
        with lrp_rules(model, "cp-lrp"):
            pass
    assert not any(m._forward_hooks for m in model.modules())
