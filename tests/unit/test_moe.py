"""Mixture-of-experts rules (lrp_llm/archs/experts.py) against hand formulas in float64, the eager
experts forward against each registered family's own, dense-first-layer layouts, and restoring."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_llm.archs import arch_for_model_type, supported_model_types
from lrp_llm.archs.description import MoEParts
from lrp_llm.archs.experts import experts_modules, install_experts, install_shared_gates
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.mechanism.patch import ModelPatch
from tests.support.conformance import conservation_ratios, without_biases_and_position_embeddings
from tests.support.tiny_any import tiny_model

# every type whose family describes MoE blocks, less the MLA models that have none (dense MLPs only)
# dense members of families whose other members have experts
DENSE_MLA = ("minicpm3", "youtu", "qwen3_5_text", "qwen3_5")  # qwen3_5: the wrapper of the dense qwen3_5_text
MOE_TYPES = [
    t
    for t in supported_model_types()
    if arch_for_model_type(t).parts is not None and arch_for_model_type(t).parts.moe and t not in DENSE_MLA
]
# the fused experts layout (Llama-4's scores scale the experts' input instead: its own test below)
FUSED_TYPES = [t for t in MOE_TYPES if not arch_for_model_type(t).parts.moe.scores_scale_input]
RULES = ("attnlrp", "cp-lrp", "relp")


def _mixtral_experts() -> nn.Module:
    """One float64 MixtralExperts module: 3 experts, hidden 4, intermediate 3, SiLU."""
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts

    config = MixtralConfig(hidden_size=4, intermediate_size=3, num_local_experts=3, num_experts_per_tok=2)
    config._experts_implementation = "eager"
    experts = MixtralExperts(config).double()
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        experts.gate_up_proj.copy_(torch.randn(experts.gate_up_proj.shape, generator=g, dtype=torch.float64))
        experts.down_proj.copy_(torch.randn(experts.down_proj.shape, generator=g, dtype=torch.float64))
    experts.requires_grad_(False)  # as under the explainers: only the inputs' gradients are wanted
    return experts


@pytest.mark.parametrize("rules", RULES)
def test_routed_experts_match_the_hand_written_rule(rules):
    experts = _mixtral_experts()
    g = torch.Generator().manual_seed(12)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    index = torch.tensor([[0, 2], [1, 0], [2, 1], [0, 1], [2, 0]])
    w = torch.softmax(torch.randn(5, 2, generator=g, dtype=torch.float64), -1)
    c = torch.randn(5, 4, generator=g, dtype=torch.float64)
    with ModelPatch(experts) as patch:
        install_experts(patch, experts, rules)
        xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        out = experts(xr, index, wr)
        gx, gw = torch.autograd.grad((out * c).sum(), (xr, wr), allow_unused=True)
    gw = torch.zeros_like(w) if gw is None else gw  # detached scores: no path back

    # by hand: E_k(x) = D_e (silu(G_e x) * U_e x); y = sum_k w_k E_k(x)
    want_y, want_gx, want_gw = torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(w)
    router_half = 0.5 if rules == "attnlrp" else None  # uniform rule on w * E, or w constant
    for t in range(5):
        for k in range(2):
            e = int(index[t, k])
            G, U = experts.gate_up_proj[e].chunk(2, dim=0)
            D = experts.down_proj[e]
            a, u = G @ x[t], U @ x[t]
            act = a * torch.sigmoid(a)
            E = D @ (act * u)
            want_y[t] += w[t, k] * E
            gE = c[t] * w[t, k] * (router_half or 1.0)  # gradient at the expert's output
            gh = D.T @ gE  # at the product act(a) * u
            if rules == "cp-lrp":  # the gate a constant
                want_gx[t] += U.T @ (gh * act)
            else:  # identity rule act(a)/a and up each x 1/2
                want_gx[t] += G.T @ (0.5 * gh * u * act / a) + U.T @ (0.5 * gh * act)
            if router_half:
                want_gw[t, k] = router_half * (c[t] @ E)
    torch.testing.assert_close(out, want_y, atol=1e-12, rtol=0)
    torch.testing.assert_close(gx, want_gx, atol=1e-10, rtol=0)
    torch.testing.assert_close(gw, want_gw, atol=1e-10, rtol=0)
    if rules != "attnlrp":  # scores constant: the block is linear in x along the rule and conserves
        torch.testing.assert_close((x * gx).sum(), (want_y * c).sum())
    else:  # the uniform rule: half to the inputs' side, half to the scores' side
        torch.testing.assert_close((x * gx).sum() + (w * gw).sum(), (want_y * c).sum())


class _SharedGate(nn.Module):
    """``sigmoid(gate(x)) * shared(x)`` as Qwen2-MoE's block computes it, with linear stand-ins."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(13)
        self.shared_expert_gate = nn.Linear(4, 1, bias=False, dtype=torch.float64)
        self.shared_expert = nn.Linear(4, 4, bias=False, dtype=torch.float64)
        for lin in (self.shared_expert_gate, self.shared_expert):
            lin.weight.data = torch.randn(lin.weight.shape, generator=g, dtype=torch.float64)
            lin.weight.requires_grad_(False)

    def forward(self, x):
        return torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)


@pytest.mark.parametrize("rules", RULES)
def test_shared_expert_gate_matches_the_hand_written_rule(rules):
    block = _SharedGate()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    c = torch.randn(3, 4, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    with ModelPatch(block) as patch:
        install_shared_gates(
            patch, block, MoEParts(shared_gate="shared_expert_gate", shared_expert="shared_expert"), rules
        )
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((block(xr) * c).sum(), xr)
    wg, ws = block.shared_expert_gate.weight, block.shared_expert.weight
    s = torch.sigmoid(x @ wg.T)  # (3, 1)
    shared = x @ ws.T
    to_shared = (c * s) @ ws  # the gate constant
    to_gate = ((c * shared).sum(-1, keepdim=True) * s * (1 - s)) @ wg  # the plain gradient through the sigmoid
    want = 0.5 * to_shared + 0.5 * to_gate if rules == "attnlrp" else to_shared
    torch.testing.assert_close(grad, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("model_type", FUSED_TYPES)
def test_the_eager_experts_forward_equals_the_models_own(model_type):
    # float32: the kernels transformers picks by default (grouped_mm) refuse float64
    model = tiny_model(model_type)
    found = experts_modules(model)
    assert found, f"{model_type}: no fused experts module found"
    experts = found[0]
    n_experts, hidden = experts.down_proj.shape[0], model.config.hidden_size
    g = torch.Generator().manual_seed(16)
    x = torch.randn(7, hidden, generator=g)
    index = torch.stack([torch.randperm(n_experts, generator=g)[:2] for _ in range(7)])
    w = torch.rand(7, 2, generator=g)
    with torch.no_grad():
        own = experts(x, index, w)  # as the model runs it (its configured experts implementation)
        # the class's own eager loop (use_experts_implementation keeps it as __wrapped__)
        eager = type(experts).forward.__wrapped__(experts, x, index, w)
        torch.testing.assert_close(eager, own, atol=1e-5, rtol=1e-5)
        for rules in RULES:
            with ModelPatch(model) as patch:
                install_experts(patch, model, rules)
                assert "forward" in experts.__dict__
                torch.testing.assert_close(experts(x, index, w), eager, atol=1e-5, rtol=1e-5)
            assert "forward" not in experts.__dict__


@pytest.mark.parametrize(
    "model_type,overrides,dense",
    [
        ("qwen2_moe", {"mlp_only_layers": [0]}, [0]),
        ("qwen2_moe", {"decoder_sparse_step": 2}, [0]),
        ("glm4_moe", {"first_k_dense_replace": 1}, [0]),
        ("mixtral", {}, []),
    ],
)
def test_dense_first_layers_get_the_gated_mlp_rules_and_conserve(model_type, overrides, dense):
    from lrp_llm.engines.causal_lm import relevance
    from tests.support.models import random_ids

    ids = random_ids(10)
    model = tiny_model(model_type, **overrides)  # float32: the default experts kernel refuses float64
    assert [i for i, layer in enumerate(model.model.layers) if not experts_modules(layer)] == dense
    with torch.no_grad():
        plain = model(torch.tensor([ids])).logits
    for rules in RULES:
        with lrp_rules(model, rules), torch.no_grad():
            torch.testing.assert_close(model(torch.tensor([ids])).logits, plain, atol=1e-5, rtol=1e-5)
    model = without_biases_and_position_embeddings(tiny_model(model_type, dtype=torch.float64, **overrides))
    out = relevance(model, ids, [9], method="cp-lrp")
    assert abs(float(out["relevance"][0].sum() / out["logits"][0]) - 1.0) < 1e-10


def test_qwen2_moe_conserves_with_its_shared_expert_gate():
    # the shared expert's sigmoid gate is held constant under CP-LRP: exact on a bias-free copy
    assert all(abs(r - 1.0) < 1e-10 for r in conservation_ratios("qwen2_moe"))


def _state(model: nn.Module) -> tuple[int, int]:
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return hooks, sum("forward" in m.__dict__ for m in model.modules())


def test_the_model_is_restored_after_an_exception_inside_the_block():
    model = tiny_model("qwen2_moe")
    ids = torch.tensor([[3, 7, 1, 9]])
    with torch.no_grad():
        plain = model(ids).logits
    before = _state(model)
    with pytest.raises(RuntimeError, match="inside"):
        with lrp_rules(model, "attnlrp"):
            assert _state(model) != before
            raise RuntimeError("inside")
    assert _state(model) == before
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain, atol=0, rtol=0)


def test_an_experts_gate_without_a_rule_is_refused_with_one_line_and_the_model_restored():
    model = tiny_model("mixtral")
    experts = experts_modules(model)[1]
    cls = type(experts)
    # a family-specific gating function (gpt-oss clamps and adds) has no rule here
    experts.__class__ = type("ClampedExperts", (cls,), {"_apply_gate": lambda self, gate_up: gate_up})
    before = _state(model)
    with pytest.raises(UnsupportedModelError, match=r"^ClampedExperts: its experts' gating function \(_apply_gate\)"):
        with lrp_rules(model, "cp-lrp"):
            pass
    assert _state(model) == before
    experts.__class__ = cls


@pytest.mark.parametrize("gate_rule", ["uniform", "detach"])
def test_clamped_swiglu_matches_the_hand_written_rule(gate_rule):
    from lrp_llm.archs.experts import clamped_swiglu

    limit, alpha = 1.5, 1.702
    # interleaved [g0, u0, g1, u1, ...]; values beyond the limit on both sides
    gate_up = 2.0 * torch.randn(4, 6, generator=torch.Generator().manual_seed(17), dtype=torch.float64)
    c = torch.randn(4, 3, generator=torch.Generator().manual_seed(18), dtype=torch.float64)
    assert (gate_up.abs() > limit).any()
    x = gate_up.clone().requires_grad_(True)
    out = clamped_swiglu(x, limit, alpha, gate_rule)
    (grad,) = torch.autograd.grad((out * c).sum(), x)
    g, u = gate_up[:, ::2], gate_up[:, 1::2]
    gc, uc = g.clamp(max=limit), u.clamp(-limit, limit)
    glu = gc * torch.sigmoid(alpha * gc)
    shifted = uc + 1
    torch.testing.assert_close(out, shifted * glu, atol=0, rtol=0)
    half = 0.5 if gate_rule == "uniform" else 1.0
    want = torch.zeros_like(gate_up)
    want[:, ::2] = half * c * shifted * glu / g  # identity rule on g -> glu(min(g, L))
    if gate_rule == "uniform":  # the clamp's plain gradient on the up side: 1 inside, 0 beyond the limit
        want[:, 1::2] = 0.5 * c * glu * (u.abs() < limit)
    torch.testing.assert_close(grad, want, atol=1e-12, rtol=0)
    if gate_rule == "detach":  # all relevance through the gate side: conserves
        torch.testing.assert_close((gate_up * grad).sum(), (out * c).sum())


def test_gpt_oss_experts_gate_is_recognised_by_its_output():
    from lrp_llm.archs.experts import _check_layout

    model = tiny_model("gpt_oss")
    assert all(_check_layout(m) == "clamped_swiglu" for m in experts_modules(model))
    assert all(_check_layout(m) == "default" for m in experts_modules(tiny_model("mixtral")))


def test_experts_without_the_fused_layout_are_refused_with_one_line():
    block = nn.Module()
    block.experts = nn.Module()
    block.experts.down_proj = nn.Parameter(torch.zeros(2, 3, 4))  # 3-D expert weights, no layout flags
    with pytest.raises(UnsupportedModelError, match=r"^Module: experts without transformers' fused-experts layout"):
        with ModelPatch(block) as patch:
            install_experts(patch, block, "cp-lrp")


@pytest.mark.parametrize("rules", RULES)
def test_llama4_input_scaled_experts_match_the_hand_written_rule(rules):
    from lrp_llm.archs.blocks import install_mlps
    from lrp_llm.archs.experts import install_moe

    parts = arch_for_model_type("llama4_text").parts
    model = tiny_model("llama4_text", dtype=torch.float64)
    block = model.model.layers[1].feed_forward
    model.requires_grad_(False)
    g = torch.Generator().manual_seed(19)
    x = torch.randn(1, 5, model.config.hidden_size, generator=g, dtype=torch.float64)
    c = torch.randn(5, model.config.hidden_size, generator=g, dtype=torch.float64)
    with torch.no_grad():
        own = block(x)[0]
    with ModelPatch(block) as patch:
        install_mlps(patch, block, parts, rules)  # the shared expert's gated product
        install_moe(patch, block, parts.moe, rules)
        xr = x.clone().requires_grad_(True)
        out = block(xr)[0]
        (grad,) = torch.autograd.grad((out * c).sum(), xr)
    torch.testing.assert_close(out, own, atol=1e-12, rtol=0)

    # by hand: y = shared(x) + sum_e D_e(silu(G_e (w_e x)) * U_e (w_e x)), w = sigmoid of the selected router logits
    h = x[0]
    shared = block.shared_expert
    a_s, u_s = h @ shared.gate_proj.weight.T, h @ shared.up_proj.weight.T
    gs = c @ shared.down_proj.weight  # gradient at the shared expert's product
    act_s = a_s * torch.sigmoid(a_s)
    if rules == "cp-lrp":
        want = (gs * act_s) @ shared.up_proj.weight
    else:
        want = (0.5 * gs * u_s * act_s / a_s) @ shared.gate_proj.weight + (0.5 * gs * act_s) @ shared.up_proj.weight
    logits = h @ block.router.weight.T
    top = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.topk(block.top_k, dim=1).indices, True)
    # (tokens, experts); the router computes the sigmoid in float32
    w = torch.where(top, torch.sigmoid(logits.float()).double(), torch.zeros_like(logits))
    x_half = 0.5 if rules == "attnlrp" else 1.0  # the uniform rule on w * x, or w constant
    for e in range(w.shape[1]):
        G, U = block.experts.gate_up_proj[e].chunk(2, dim=-1)  # [H, I] each
        D = block.experts.down_proj[e]  # [I, H]
        r = h * w[:, e : e + 1]
        a, u = r @ G, r @ U
        act = a * torch.sigmoid(a)
        gh = c @ D.T
        if rules == "cp-lrp":
            gr = (gh * act) @ U.T
        else:
            gr = (0.5 * gh * u * torch.where(a == 0, torch.full_like(a, 0.5), act / a)) @ G.T + (0.5 * gh * act) @ U.T
        want = want + x_half * gr * w[:, e : e + 1]
        if rules == "attnlrp":  # the scores' half: through the sigmoid of the selected logits (plain gradient)
            gw = 0.5 * (gr * h).sum(-1, keepdim=True) * w[:, e : e + 1] * (1 - w[:, e : e + 1]) * top[:, e : e + 1]
            want = want + gw * block.router.weight[e]
    # under AttnLRP the scores' half passes the router's float32 sigmoid backward: float32 rounding there
    torch.testing.assert_close(grad[0], want, atol=1e-6 if rules == "attnlrp" else 1e-10, rtol=0)


@pytest.mark.parametrize("model_type,part", [("longcat_flash", "LongcatFlashExperts")])
def test_moe_types_without_a_rule_are_refused_naming_the_part(model_type, part):
    from lrp_llm.archs import get_arch

    model = tiny_model(model_type, kv_lora_rank=16, q_lora_rank=24)
    with pytest.raises(
        UnsupportedModelError, match=rf"^unsupported architecture '{model_type}' \(.*{part}.* no LRP rule"
    ):
        get_arch(model)
