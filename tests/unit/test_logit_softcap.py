"""Gemma-2's final-logit soft-cap ``cap * tanh(x / cap)`` passes relevance by the identity rule."""

import pytest
import torch

from lrp_llm.archs.blocks import softcap_output
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.mechanism.context import lrp_rules
from tests.support.models import logits_of, model_state, random_ids, tiny_causal_lm

DEFAULT_CAPS = dict(final_logit_softcapping=30.0, attn_logit_softcapping=50.0)  # Gemma2Config's defaults


def capped_gemma2(dtype=torch.float32, **overrides):
    return tiny_causal_lm("gemma2", dtype=dtype, **{**DEFAULT_CAPS, **overrides})


# a cap the tiny model's logits (about 2 in size) really reach; checkpoints set the field freely
LOW_CAP = 2.0


def uncapped_logits(model, ids) -> torch.Tensor:
    cap = model.config.final_logit_softcapping
    model.config.final_logit_softcapping = None
    try:
        return logits_of(model, ids)
    finally:
        model.config.final_logit_softcapping = cap


def test_the_tiny_model_reaches_the_cap():
    # otherwise the tests below could not tell a capped forward from an uncapped one
    ids = random_ids(12)
    for cap, least in ((30.0, 1e-3), (LOW_CAP, 0.5)):
        model = capped_gemma2(final_logit_softcapping=cap)
        assert (logits_of(model, ids) - uncapped_logits(model, ids)).abs().max() > least


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_forward_under_the_rules_equals_the_plain_forward_and_the_config_comes_back(rules):
    model = capped_gemma2()
    config, before = model.config, model_state(model)
    ids = random_ids(12)
    plain = logits_of(model, ids)
    with lrp_rules(model, rules):
        assert model.config.final_logit_softcapping is None
        ruled = logits_of(model, ids)
    torch.testing.assert_close(ruled, plain, atol=1e-5, rtol=0)
    assert model.config is config and config.final_logit_softcapping == 30.0
    assert config.attn_logit_softcapping == 50.0
    assert model_state(model) == before


def test_the_config_is_restored_when_the_block_raises():
    model = capped_gemma2()
    config = model.config
    with pytest.raises(RuntimeError, match="inside"):
        with lrp_rules(model, "cp-lrp"):
            raise RuntimeError("inside")
    assert model.config is config and config.final_logit_softcapping == 30.0


def test_a_second_model_sharing_the_config_keeps_its_cap():
    from transformers import AutoModelForCausalLM

    model = capped_gemma2()
    other = AutoModelForCausalLM.from_config(model.config, attn_implementation="eager").eval()
    assert other.config is model.config  # transformers shares the object
    ids = random_ids(12)
    expected = logits_of(other, ids)
    with lrp_rules(model, "cp-lrp"):
        torch.testing.assert_close(logits_of(other, ids), expected, atol=0, rtol=0)
        assert other.config.final_logit_softcapping == 30.0


@pytest.mark.parametrize("cap", [30.0, LOW_CAP])
def test_cp_lrp_conserves_the_capped_logit_exactly(cap):
    model = capped_gemma2(dtype=torch.float64, final_logit_softcapping=cap)
    ids = random_ids(14)
    out = relevance(model, ids, [9, 13], method="cp-lrp")
    capped = logits_of(model, ids)[0, [8, 12], [ids[9], ids[13]]]
    # the explained logits are the capped ones (Gemma's own norms round to float32, the rules' do not)
    torch.testing.assert_close(out["logits"], capped, atol=1e-5, rtol=0)
    for i in range(2):
        assert abs(float(out["relevance"][i].sum() / out["logits"][i]) - 1.0) < 1e-10


def test_the_hook_is_the_identity_rule_on_the_cap():
    x = torch.tensor([[-80.0, -3.0, 0.5, 20.0, 95.0]], dtype=torch.float64, requires_grad=True)
    y = softcap_output(30.0)(None, (), x)
    torch.testing.assert_close(y, 30.0 * torch.tanh(x / 30.0), atol=0, rtol=0)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(x * grad, y.detach(), atol=1e-12, rtol=0)  # relevance x * grad equals the capped value
