"""Every registered family's description resolves on a tiny random model of each model type:
the rule sets install and restore, the forward is unchanged under them, the blocks and (where
offered) the patching sites resolve; and the shared block installers against hand formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_llm.archs import arch_for_model_type, get_arch, supported_model_types
from lrp_llm.archs.blocks import install_attention, install_mlps, install_norms
from lrp_llm.archs.description import (
    AttentionParts,
    FusedGatedMLPParts,
    GatedMLPParts,
    MLPParts,
    NormParts,
    TransformerParts,
    resolve,
)
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.context import decoder_layers, lrp_rules
from lrp_llm.mechanism.patch import ModelPatch
from patching.sites import SiteMap
from tests.support.conformance import causal_types, conservation_ratios, conservative_rules, tiny_for


def _first_output(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _state(model: nn.Module) -> tuple[int, int]:
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return hooks, sum("forward" in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("model_type", supported_model_types())
def test_every_rule_set_installs_keeps_the_forward_and_restores(model_type):
    torch.manual_seed(0)
    model, inputs = tiny_for(model_type)
    spec = get_arch(model)
    assert model_type in spec.model_types
    with torch.no_grad():
        plain = _first_output(model(**inputs))
    before = _state(model)
    for rules in (*spec.rules, *spec.patching_rules):
        with lrp_rules(model, rules) as patch, torch.no_grad():
            assert patch._undo, f"{rules} installed nothing on {model_type}"
            torch.testing.assert_close(_first_output(model(**inputs)), plain, atol=1e-5, rtol=1e-5)
        assert _state(model) == before
    with pytest.raises(ValueError, match="unknown rule set 'nonsense'"):
        with lrp_rules(model, "nonsense"):
            pass
    assert _state(model) == before


@pytest.mark.parametrize("model_type", supported_model_types())
def test_blocks_and_sites_resolve(model_type):
    model, _ = tiny_for(model_type)
    spec = get_arch(model)
    if spec.blocks is None:
        return
    layers = decoder_layers(model)
    assert isinstance(layers, nn.ModuleList) and len(layers) == model.config.get_text_config().num_hidden_layers
    if spec.blocks.attention is None and spec.blocks.mixer is None:
        with pytest.raises(UnsupportedModelError, match="patching does not support .*; supported: .*llama.*mamba"):
            SiteMap(model)
        return
    sm = SiteMap(model)
    assert sm.family == spec.family
    for name in sm.expand([k for k in sm.kinds if k not in ("neuron", "expert")]):
        loc = sm.locate(name)
        assert any(loc.module is m for m in model.modules())
    if "neuron" in sm.kinds:  # the first block with an MLP (hybrids: not every block has one)
        i = sm.layers_with("neuron")[0]
        assert sm.locate(f"layer.{i}.mlp.neuron.0").module is resolve(layers[i], spec.blocks.neurons)


def test_unregistered_model_has_a_one_line_error_naming_the_supported():
    from transformers import XLNetConfig, XLNetLMHeadModel

    model = XLNetLMHeadModel(XLNetConfig(n_layer=1, d_model=8, n_head=2, d_inner=16, vocab_size=11))
    with pytest.raises(UnsupportedModelError, match=r"patching does not support 'xlnet'; supported: .*mamba2.*qwen3"):
        SiteMap(model)
    assert arch_for_model_type("xlnet") is None and arch_for_model_type(None) is None
    assert arch_for_model_type("qwen2").family == "llama"


# ------------------------------------------------------------------ shared blocks by hand
class _Attn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.wq, self.wk, self.wv = (nn.Linear(4, 4, bias=False, dtype=torch.float64) for _ in range(3))
        for lin in (self.wq, self.wk, self.wv):
            lin.weight.data = torch.randn(4, 4, generator=g, dtype=torch.float64)
            lin.weight.requires_grad_(False)  # as under the explainers: only the input's gradient is wanted

    def forward(self, x):
        return self.wq(x), self.wk(x), self.wv(x)


@pytest.mark.parametrize(
    "rules,factors", [("attnlrp", (0.25, 0.25, 0.5)), ("cp-lrp", (0.0, 0.0, 1.0)), ("relp", (0.0, 0.0, 1.0))]
)
@pytest.mark.parametrize("forward_mode", [False, True])
def test_attention_installer_scales_q_k_v_gradients(rules, factors, forward_mode):
    attn = _Attn()
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    cot = [torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3 + i)) for i in range(3)]
    for i, lin in enumerate((attn.wq, attn.wk, attn.wv)):
        with ModelPatch(attn) as patch:
            install_attention(patch, [attn], AttentionParts(q="wq", k="wk", v="wv"), rules, forward_mode=forward_mode)
            xr = x.clone().requires_grad_(True)
            out = attn(xr)[i]
            # a detached output has no path back to x: its gradient is zero
            got = torch.autograd.grad(out, xr, cot[i])[0] if out.requires_grad else torch.zeros_like(x)
        want = factors[i] * (cot[i] @ lin.weight)  # the plain gradient of x @ W.T is cot @ W
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


class _GatedMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.gate, self.up, self.down = (nn.Linear(4, 4, bias=False, dtype=torch.float64) for _ in range(3))
        for lin in (self.gate, self.up, self.down):
            lin.weight.data = torch.randn(4, 4, generator=g, dtype=torch.float64)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.down(self.act(self.gate(x)) * self.up(x))


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_gated_mlp_installer_matches_the_hand_written_rule(rules):
    mlp = _GatedMLP()
    parts = TransformerParts(
        attention=AttentionParts(q="q", k="k", v="v"),
        mlps=(GatedMLPParts(gate="gate", up="up", down="down", act="act"),),
        norm=NormParts(kind="rms", class_suffix="RMSNorm"),
    )
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    c = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    with ModelPatch(mlp) as patch:
        install_mlps(patch, mlp, parts, rules)
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((mlp(xr) * c).sum(), xr)
    a, u = x @ mlp.gate.weight.T, x @ mlp.up.weight.T
    act = a * torch.sigmoid(a)
    gh = c @ mlp.down.weight  # gradient at the product act(a) * u
    if rules == "cp-lrp":  # the gate is a constant
        want = (gh * act) @ mlp.up.weight
    else:  # half to each factor; identity rule act(a) / a on the activation
        want = (0.5 * gh * u * act / a) @ mlp.gate.weight + (0.5 * gh * act) @ mlp.up.weight
    torch.testing.assert_close(grad, want, atol=1e-10, rtol=0)
    torch.testing.assert_close((x * grad).sum(), (mlp(x) * c).sum())  # conserves (bias-free)


class _FusedGatedMLP(nn.Module):
    """``_GatedMLP`` with gate and up as one projection (gate first), as Phi-3's ``gate_up_proj``."""

    def __init__(self, unfused: _GatedMLP) -> None:
        super().__init__()
        self.gate_up = nn.Linear(4, 8, bias=False, dtype=torch.float64)
        self.gate_up.weight.data = torch.cat((unfused.gate.weight.data, unfused.up.weight.data))
        self.down, self.act = unfused.down, nn.SiLU()

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(self.act(gate) * up)


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_fused_gated_mlp_installer_matches_the_unfused_rule(rules):
    unfused = _GatedMLP()
    fused = _FusedGatedMLP(unfused)
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    c = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    grads = []
    for mlp, names in (
        (unfused, GatedMLPParts(gate="gate", up="up", down="down", act="act")),
        (fused, FusedGatedMLPParts(gate_up="gate_up", down="down", act="act")),
    ):
        parts = TransformerParts(
            attention=AttentionParts(q="q", k="k", v="v"),
            mlps=(names,),
            norm=NormParts(kind="rms", class_suffix="RMSNorm"),
        )
        with ModelPatch(mlp) as patch:
            install_mlps(patch, mlp, parts, rules)
            xr = x.clone().requires_grad_(True)
            out = mlp(xr)
            (grad,) = torch.autograd.grad((out * c).sum(), xr)
        torch.testing.assert_close(out, unfused(x), atol=1e-12, rtol=0)
        grads.append(grad)
    # the unfused installer is checked against the hand-written rule above
    torch.testing.assert_close(grads[1], grads[0], atol=1e-12, rtol=0)
    torch.testing.assert_close((x * grads[1]).sum(), (fused(x) * c).sum())  # conserves (bias-free)


def test_plain_mlp_activation_gets_the_identity_rule():
    mlp = nn.Module()
    mlp.fc1, mlp.fc2, mlp.act = nn.Linear(3, 6, dtype=torch.float64), nn.Linear(6, 3, dtype=torch.float64), nn.GELU()
    parts = TransformerParts(
        attention=AttentionParts(q="q", k="k", v="v"),
        mlps=(MLPParts(up="fc1", down="fc2", act="act"),),
        norm=NormParts(kind="layer", class_suffix="LayerNorm"),
    )
    h = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    with ModelPatch(mlp) as patch:
        install_mlps(patch, mlp, parts, "attnlrp")
        hr = h.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(mlp.act(hr).sum(), hr)
    torch.testing.assert_close(grad, torch.nn.functional.gelu(h) / h)


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_norm_installer_detaches_the_scale(kind):
    d = 5
    norm = nn.LayerNorm(d, dtype=torch.float64) if kind == "layer" else nn.RMSNorm(d, eps=1e-6, dtype=torch.float64)
    norm.weight.data = torch.linspace(0.5, 1.5, d, dtype=torch.float64)
    x = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    c = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    with ModelPatch(norm) as patch:
        install_norms(patch, [norm], NormParts(kind=kind, class_suffix="Norm"))
        xr = x.clone().requires_grad_(True)
        out = norm(xr)
        (grad,) = torch.autograd.grad((out * c).sum(), xr)
    torch.testing.assert_close(out, norm(x))
    centred = x - x.mean(-1, keepdim=True) if kind == "layer" else x
    sigma = torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + norm.eps)
    g = c * norm.weight / sigma  # 1/sigma a constant: a linear map (with the mean removed for LayerNorm)
    want = g - g.mean(-1, keepdim=True) if kind == "layer" else g
    torch.testing.assert_close(grad, want, atol=1e-12, rtol=0)


# ------------------------------------------------------------------ conservation, every causal LM
@pytest.mark.parametrize("model_type", causal_types())
def test_the_conservative_rule_set_conserves_the_logit_on_a_bias_free_copy(model_type):
    for ratio in conservation_ratios(model_type):
        assert abs(ratio - 1.0) < 1e-4, f"{model_type} {conservative_rules(model_type)}: relevance sums to {ratio:.6f}"
