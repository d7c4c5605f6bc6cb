"""The attention output gate ``o_proj(o * act(x))`` (Laguna, AFMoE, Beam): its rule against hand formulas
in float64, on the product alone and inside tiny models of each family, and its refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_llm.archs.attention_gate import gated_output_rule, install_attention_gates
from lrp_llm.archs.description import AttentionOutputGateParts
from lrp_llm.archs.experts import _check_layout, experts_modules
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.mechanism.patch import ModelPatch
from tests.support.tiny_any import tiny_model

ACTS = {"sigmoid": torch.sigmoid, "softplus": nn.functional.softplus}


@pytest.mark.parametrize("act", ["sigmoid", "softplus"])
@pytest.mark.parametrize("per_head", [False, True])
def test_the_product_gets_half_on_o_and_the_identity_rule_times_half_on_the_gate(act, per_head):
    torch.manual_seed(0)
    o = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)  # (batch, pos, heads, head_dim)
    x = (2 * torch.randn(2, 5, 3, 1 if per_head else 4, dtype=torch.float64)).requires_grad_()
    cotangent = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    p = o * ACTS[act](x.detach())  # as the modules compute it, the gate's input detached by the rule's hook
    ruled = gated_output_rule(p, x)
    torch.testing.assert_close(ruled, o.detach() * ACTS[act](x.detach()), atol=0, rtol=0)
    ruled.backward(cotangent)
    a = ACTS[act](x.detach())
    # hand formulas: d/do = 1/2 * c * act(x); d/dx = 1/2 * c * o * act(x) / x (summed over a broadcast head)
    torch.testing.assert_close(o.grad, 0.5 * cotangent * a)
    want = 0.5 * cotangent * o.detach() * a / x.detach()
    torch.testing.assert_close(x.grad, want.sum(-1, keepdim=True) if per_head else want)
    # relevance: what leaves through o and x is what entered p, half each
    entered = (p.detach() * cotangent).sum()
    torch.testing.assert_close((o * o.grad).sum(), 0.5 * entered)
    torch.testing.assert_close((x * x.grad).sum(), 0.5 * entered)


def test_a_saturated_sigmoid_gate_keeps_its_relevance():
    # sigmoid'(30) is 0 in float32: read through the gradient of the sigmoid, this gate's half would be lost
    o = torch.ones(1, 1, 1, 4, requires_grad=True)
    x = torch.full((1, 1, 1, 4), 30.0, requires_grad=True)
    ruled = gated_output_rule(o * torch.sigmoid(x.detach()), x)
    ruled.sum().backward()
    torch.testing.assert_close(x * x.grad, torch.full_like(x, 0.5))


# family -> (config overrides, the gate projection, its activation, the per-head bias or None)
FAMILIES = {
    "laguna-per-head": ("laguna", {"gating": True}, "g_proj", "softplus", None),
    "laguna-per-channel": ("laguna", {"gating": False}, "g_proj", "softplus", None),
    "afmoe": ("afmoe", {}, "gate_proj", "sigmoid", None),
    "beam": ("beam", {}, "gate_proj", "sigmoid", "gate_bias"),
}


def _attentions(model, gate_name: str) -> list[nn.Module]:
    return [
        m for m in model.modules() if all(isinstance(getattr(m, a, None), nn.Linear) for a in (gate_name, "o_proj"))
    ]


def _gradients_at_the_gate(model, gate_name: str, rules: str):
    """Per attention module: (g, g.grad, p, c) with g the gate projection's output, p the product entering the
    output projection and c the gradient the output projection's input receives, under ``rules`` in float64."""
    seen = []
    handles = []
    for attn in _attentions(model, gate_name):
        record: dict[str, torch.Tensor] = {}
        seen.append(record)

        def keep_gate(_m, _a, out, record=record):
            out.retain_grad()
            record["g"] = out

        def keep_product(_m, args, record=record):
            record["p"] = args[0].detach()

        def keep_output(_m, _a, out, record=record):
            out.retain_grad()
            record["out"] = out

        # registered before the rules' hooks: they see the plain values
        handles.append(getattr(attn, gate_name).register_forward_hook(keep_gate))
        handles.append(attn.o_proj.register_forward_pre_hook(keep_product))
        handles.append(attn.o_proj.register_forward_hook(keep_output))
        record["w"] = attn.o_proj.weight.detach()
    try:
        with lrp_rules(model, rules):
            embeds = model.get_input_embeddings()(torch.tensor([[3, 7, 1, 9, 4, 2]])).detach().requires_grad_()
            logits = model(inputs_embeds=embeds).logits
            logits[0, -1].max().backward()
    finally:
        for handle in handles:
            handle.remove()
    return [(r["g"], r["g"].grad, r["p"], r["out"].grad @ r["w"]) for r in seen]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_gate_in_each_family_gets_the_identity_rule_times_half(name):
    model_type, overrides, gate_name, act, bias_name = FAMILIES[name]
    model = tiny_model(model_type, dtype=torch.float64, **overrides)
    attentions = _attentions(model, gate_name)
    assert len(attentions) == model.config.num_hidden_layers
    for attn, (g, grad, p, c) in zip(attentions, _gradients_at_the_gate(model, gate_name, "attnlrp"), strict=True):
        heads = attn.o_proj.in_features // attn.head_dim
        x = g.detach().view(*g.shape[:-1], heads, -1)
        if bias_name is not None:
            x = x + getattr(attn, bias_name).detach()[:, None]
        shape = (*p.shape[:-1], heads, attn.head_dim)
        # the identity rule x 1/2 on act: d/dx = 1/2 * c * p / x, summed over head_dim for a per-head gate
        want = 0.5 * c.view(shape) * p.view(shape) / x
        if x.shape[-1] == 1:
            want = want.sum(-1)
        torch.testing.assert_close(grad, want.reshape(grad.shape), rtol=1e-9, atol=1e-12)
        assert (g.shape[-1] == heads) == name.endswith("per-head")


@pytest.mark.parametrize("name", ["laguna-per-head", "beam"])
def test_cp_lrp_holds_the_gate_constant(name):
    model_type, overrides, gate_name, _act, _bias = FAMILIES[name]
    model = tiny_model(model_type, dtype=torch.float64, **overrides)
    for g, grad, _p, _c in _gradients_at_the_gate(model, gate_name, "cp-lrp"):
        assert g.requires_grad and (grad is None or not grad.any())


def test_beams_float32_expert_gate_is_recognised_as_the_plain_gated_product():
    model = tiny_model("beam")
    (experts,) = experts_modules(model)
    assert _check_layout(experts) == "default"

    class Doubled(type(experts)):
        def _apply_gate(self, gate_up):
            gate, up = gate_up.chunk(2, dim=-1)
            return 2 * self.act_fn(gate) * up

    experts.__class__ = Doubled
    with pytest.raises(UnsupportedModelError, match="Doubled: its experts' gating function"):
        _check_layout(experts)


def test_a_gate_whose_width_fits_no_layout_is_refused_in_one_line():
    model = tiny_model("afmoe")
    attn = next(m for m in model.modules() if hasattr(m, "gate_proj") and hasattr(m, "o_proj"))
    attn.gate_proj = nn.Linear(attn.gate_proj.in_features, 3, bias=False)
    parts = AttentionOutputGateParts(gate="gate_proj", output="o_proj", act="sigmoid")
    with pytest.raises(UnsupportedModelError, match=r"output gate \(3 wide, attention output 32\)") as error:
        with ModelPatch(model) as patch:
            install_attention_gates(patch, [attn], parts, "attnlrp")
    assert "\n" not in str(error.value)
