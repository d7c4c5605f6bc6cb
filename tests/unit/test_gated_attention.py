"""The attention output gate ``o_proj(o * act(x))`` (Laguna, AFMoE, Beam, Qwen3-Next, Qwen3.5, Bailing): its
rule against hand formulas in float64, on the product alone and inside tiny models of each family (every gate
layout: its own projection per channel or per head, with a per-head bias, a slice of the query heads), and
its refusals."""

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


# case -> (model type, config overrides, the gate's projection, its activation, the per-head bias or None,
# the gate's source: "projection" or "query_heads", one gate per head)
FAMILIES = {
    "laguna-per-head": ("laguna", {"gating": True}, "g_proj", "softplus", None, "projection", True),
    "laguna-per-channel": ("laguna", {"gating": False}, "g_proj", "softplus", None, "projection", False),
    "afmoe": ("afmoe", {}, "gate_proj", "sigmoid", None, "projection", False),
    "beam": ("beam", {}, "gate_proj", "sigmoid", "gate_bias", "projection", False),
    "qwen3_next": ("qwen3_next", {}, "q_proj", "sigmoid", None, "query_heads", False),
    "qwen3_5_text": ("qwen3_5_text", {}, "q_proj", "sigmoid", None, "query_heads", False),
    "bailing_hybrid": ("bailing_hybrid", {}, "g_proj", "sigmoid", None, "projection", True),
    "lfm3": ("lfm3", {}, "g_proj", "sigmoid", None, "projection", True),
}


def _attentions(model, gate_name: str) -> list[nn.Module]:
    # attention modules only: the DeltaNets have q_proj / g_proj too, but no o_proj (Qwen) or no o_proj beside
    # a gate of the head count (Kimi's delta attention); the attention modules hold a config
    return [
        m
        for m in model.modules()
        if all(isinstance(getattr(m, a, None), nn.Linear) for a in (gate_name, "o_proj")) and not hasattr(m, "conv1d")
    ]


def _gate_of(output: torch.Tensor, source: str, heads: int) -> torch.Tensor:
    """The gate's part (…, width) of the gate projection's output (per head [query | gate] for "query_heads")."""
    if source == "projection":
        return output
    return output.view(*output.shape[:-1], heads, 2, -1)[..., 1, :].reshape(*output.shape[:-1], -1)


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
    assert seen and all("p" in r for r in seen)
    return [(r["g"], r["g"].grad, r["p"], r["out"].grad @ r["w"]) for r in seen]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_gate_in_each_family_gets_the_identity_rule_times_half(name):
    model_type, overrides, gate_name, act, bias_name, source, per_head = FAMILIES[name]
    model = tiny_model(model_type, dtype=torch.float64, **overrides)
    attentions = _attentions(model, gate_name)
    # every block has attention but the hybrids' linear-attention ones and LFM3's convolutions
    types = getattr(model.config, "layer_types", None) or ["full_attention"] * model.config.num_hidden_layers
    assert len(attentions) == sum(t not in ("linear_attention", "conv") for t in types) > 0
    for attn, (g, grad, p, c) in zip(attentions, _gradients_at_the_gate(model, gate_name, "attnlrp"), strict=True):
        heads = model.config.num_attention_heads
        gate, gate_grad = _gate_of(g.detach(), source, heads), _gate_of(grad, source, heads)
        x = gate.view(*gate.shape[:-1], heads, -1)
        if bias_name is not None:
            x = x + getattr(attn, bias_name).detach()[:, None]
        shape = (*p.shape[:-1], heads, -1)
        # the forward is the plain one: p = o * act(x), with o recovered from p (act > 0 here)
        # the identity rule x 1/2 on act: d/dx = 1/2 * c * p / x, summed over head_dim for a per-head gate
        want = 0.5 * c.view(shape) * p.view(shape) / x
        if per_head:
            want = want.sum(-1)
        torch.testing.assert_close(gate_grad, want.reshape(gate_grad.shape), rtol=1e-9, atol=1e-12)
        assert (gate.shape[-1] == heads) == per_head
        if source == "query_heads":
            # the query half of q_proj's output still carries the attention's gradient
            query_grad = grad.view(*grad.shape[:-1], heads, 2, -1)[..., 0, :]
            assert query_grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["laguna-per-head", "beam", "bailing_hybrid", "lfm3"])
def test_cp_lrp_holds_the_gate_constant(name):
    model_type, overrides, gate_name, _act, _bias, _source, _per_head = FAMILIES[name]
    model = tiny_model(model_type, dtype=torch.float64, **overrides)
    for g, grad, _p, _c in _gradients_at_the_gate(model, gate_name, "cp-lrp"):
        assert g.requires_grad and (grad is None or not grad.any())


@pytest.mark.parametrize("rules", ["cp-lrp", "attnlrp"])
def test_a_gate_sliced_from_the_query_heads_is_held_there_and_the_query_left_alone(rules):
    # on q_proj alone (CP-LRP detaches the query inside the model, so this is where the halves can be told apart):
    # the output unchanged, the query half's gradient the plain one, the gate half's none (held, or handed to the
    # output projection's rule under AttnLRP), and the hook gone afterwards
    model = tiny_model("qwen3_next", dtype=torch.float64)
    attn = _attentions(model, "q_proj")[0]
    heads, parts = model.config.num_attention_heads, model_spec_gate("qwen3_next")
    x = torch.randn(2, 3, attn.q_proj.in_features, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    upstream = torch.randn(2, 3, attn.q_proj.out_features, dtype=torch.float64)
    with ModelPatch(model) as patch:
        install_attention_gates(patch, [attn], parts, rules)
        y = attn.q_proj(x)
    torch.testing.assert_close(y, attn.q_proj(x), rtol=0, atol=0)
    (grad,) = torch.autograd.grad(y, attn.q_proj.weight, upstream)
    plain = (upstream.reshape(-1, upstream.shape[-1]).T @ x.reshape(-1, x.shape[-1])).view(heads, 2, -1, x.shape[-1])
    torch.testing.assert_close(grad.view(heads, 2, -1, x.shape[-1])[:, 0], plain[:, 0])
    assert not grad.view(heads, 2, -1, x.shape[-1])[:, 1].any()
    assert not attn.q_proj._forward_hooks and "forward" not in vars(attn.o_proj)


def model_spec_gate(model_type: str) -> AttentionOutputGateParts:
    from lrp_llm.archs import arch_for_model_type

    return arch_for_model_type(model_type).parts.attention_gate


def test_the_uniform_rule_halves_what_enters_the_gated_product():
    # the product's two sides, inside a Qwen3-Next attention: the relevance at the gate's input plus the
    # relevance the attention output receives (p.grad after the rule, times o) is the relevance of p
    model = tiny_model("qwen3_next", dtype=torch.float64)
    heads = model.config.num_attention_heads
    for g, grad, p, c in _gradients_at_the_gate(model, "q_proj", "attnlrp"):
        gate, gate_grad = _gate_of(g.detach(), "query_heads", heads), _gate_of(grad, "query_heads", heads)
        torch.testing.assert_close((gate * gate_grad).sum(), 0.5 * (p * c).sum(), rtol=1e-9, atol=1e-12)


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


@pytest.mark.parametrize(
    ("model_type", "gate_name", "width", "source", "groups"),
    [
        ("qwen3_next", "q_proj", 40, "query_heads", "element"),  # not twice the attention output
        ("bailing_hybrid", "g_proj", 3, "projection", "head"),  # not a divisor of the attention output
        ("afmoe", "gate_proj", 4, "projection", "element"),  # a per-head width where per element is declared
    ],
)
def test_each_layout_refuses_a_gate_of_another_width_in_one_line(model_type, gate_name, width, source, groups):
    model = tiny_model(model_type)
    attn = _attentions(model, gate_name)[0]
    setattr(attn, gate_name, nn.Linear(getattr(attn, gate_name).in_features, width, bias=False))
    parts = AttentionOutputGateParts(gate=gate_name, output="o_proj", act="sigmoid", source=source, groups=groups)
    with pytest.raises(UnsupportedModelError, match="output gate") as error:
        with ModelPatch(model) as patch:
            install_attention_gates(patch, [attn], parts, "attnlrp")
    assert "\n" not in str(error.value)


def test_a_gate_layout_that_does_not_exist_is_refused_where_the_family_is_declared():
    with pytest.raises(ValueError, match="one per element"):
        AttentionOutputGateParts(gate="q_proj", output="o_proj", act="sigmoid", source="query_heads", groups="head")
    with pytest.raises(ValueError, match="groups 'channel'"):
        AttentionOutputGateParts(gate="g", output="o", act="sigmoid", groups="channel")
