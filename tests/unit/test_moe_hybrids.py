"""Hybrids with mixture-of-experts layers (Jamba, Nemotron-H ``moe`` blocks, Granite-4 hybrid with experts) and
Cohere-2-MoE's RMSNorm variant: the MoE rules compose with the mixers' and the attention's, the forward is
unchanged under every rule set, the model restored, and CP-LRP + MambaLRP conserve exactly (bias-free float64)."""

from __future__ import annotations

import pytest
import torch

from lrp_llm.archs import get_arch
from lrp_llm.archs.experts import experts_modules
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.mechanism.context import lrp_rules
from tests.support.conformance import without_biases_and_position_embeddings
from tests.support.models import random_ids
from tests.support.tiny_any import tiny_model

# name -> (model type, config overrides, whether it has routed experts)
CASES = {
    "jamba": ("jamba", {}, True),
    # the suite's tiny Nemotron-H has its moe block last; here it comes before a dense MLP block
    "nemotron_h-moe-first": (
        "nemotron_h",
        {"layer_types": ["mamba", "moe", "attention", "mlp"], "layers_block_type": None},
        True,
    ),
    "granitemoehybrid-experts": ("granitemoehybrid", {"num_local_experts": 4}, True),
    # the dense Granite-4 hybrid (granite-4.0-h-micro): the MoE installer finds nothing and changes nothing
    "granitemoehybrid-dense": ("granitemoehybrid", {"num_local_experts": 0}, False),
    "cohere2_moe-rms": ("cohere2_moe", {"rms_norm_eps": 1e-6}, True),
}
IDS = torch.tensor([[3, 7, 1, 9, 4, 2]])


def _model(name: str, dtype=torch.float32):
    model_type, overrides, _ = CASES[name]
    return tiny_model(model_type, dtype=dtype, **overrides)


def _hooks_and_overrides(model) -> tuple[int, int]:
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return hooks, sum("forward" in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("name", list(CASES))
def test_every_rule_set_keeps_the_forward_rules_the_experts_and_restores(name):
    model = _model(name)
    experts = experts_modules(model)
    assert bool(experts) == CASES[name][2], f"{name}: routed experts {'missing' if CASES[name][2] else 'present'}"
    with torch.no_grad():
        plain = model(IDS, use_cache=False).logits
    before = _hooks_and_overrides(model)
    spec = get_arch(model)
    for rules in (*spec.rules, *spec.patching_rules):
        with lrp_rules(model, rules), torch.no_grad():
            # the experts run the eager forward with the rules, not transformers' kernel
            assert all("forward" in e.__dict__ for e in experts), rules
            torch.testing.assert_close(model(IDS, use_cache=False).logits, plain, atol=1e-5, rtol=1e-5)
        assert _hooks_and_overrides(model) == before


@pytest.mark.parametrize("name", list(CASES))
def test_the_conservative_rules_conserve_on_a_bias_free_copy(name):
    torch.manual_seed(0)
    model = without_biases_and_position_embeddings(_model(name, torch.float64))
    out = relevance(model, random_ids(12), [8, 11], method="cp-lrp")
    for i in range(2):
        ratio = float(out["relevance"][i].sum() / out["logits"][i])
        assert abs(ratio - 1.0) < 1e-4, f"{name}: relevance sums to {ratio:.6f} of the logit"


def test_cohere2_moe_rms_variant_details_its_norms():
    """The installer reads the norm kind from the config: with ``rms_norm_eps`` the RMSNorms get their rule
    (without it, 1/rms would keep its gradient and CP-LRP would not conserve; checked above)."""
    model = _model("cohere2_moe-rms")
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    assert norms and not any(type(m).__name__.endswith("LayerNorm") for m in model.modules())
    with lrp_rules(model, "cp-lrp"):
        assert all("forward" in m.__dict__ for m in norms)
