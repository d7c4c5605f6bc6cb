"""The RMSNorm convention (``weight`` or Gemma's ``1 + weight``) is read from the module, not its class name."""

import pytest
import torch
from torch import nn

from lrp_llm.archs.blocks import rms_norm_offset
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.context import lrp_rules
from tests.support.models import logits_of, random_ids, tiny_causal_lm


def rms_norms(model) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]


def eps_of(norm: nn.Module) -> float:
    return getattr(norm, "variance_epsilon", getattr(norm, "eps", None))


@pytest.mark.parametrize(
    ("family", "offset"), [("gemma", 1.0), ("gemma2", 1.0), ("gemma3_text", 1.0), ("llama", 0.0), ("qwen3", 0.0)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_offset_is_read_from_the_forward(family, offset, dtype):
    model = tiny_causal_lm(family, dtype=dtype)
    norms = rms_norms(model)
    assert len(norms) >= 5
    for norm in norms:
        assert rms_norm_offset(norm, eps_of(norm)) == offset


def test_gemma3n_norm_has_no_offset_despite_its_name():
    from transformers.models.gemma3n.modeling_gemma3n import Gemma3nRMSNorm

    norm = Gemma3nRMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-1.0, 2.0, 16))
    assert rms_norm_offset(norm, norm.eps) == 0.0


class NoOffsetGemmaRMSNorm(nn.Module):
    """A norm named like Gemma's that scales by ``weight`` (no offset), as Gemma-3n / Gemma-4 do."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.weight = norm.weight
        self.variance_epsilon = norm.variance_epsilon

    def forward(self, hidden_states):
        h = hidden_states.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return (self.weight * h).to(hidden_states.dtype)


class ShiftedRMSNorm(NoOffsetGemmaRMSNorm):
    """``x / rms(x) * (2 + weight)``: neither convention."""

    def forward(self, hidden_states):
        return (
            super().forward(hidden_states)
            + 2.0 * hidden_states / hidden_states.pow(2).mean(-1, keepdim=True).add(self.variance_epsilon).sqrt()
        )


def replace_norms(model, cls) -> None:
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if type(child).__name__ == "LlamaRMSNorm":
                setattr(module, child_name, cls(child))


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_a_gemma_named_norm_without_offset_keeps_the_forward(rules):
    model = tiny_causal_lm("llama")
    replace_norms(model, NoOffsetGemmaRMSNorm)
    norms = rms_norms(model)
    assert len(norms) == 5 and all(type(n) is NoOffsetGemmaRMSNorm for n in norms)
    ids = random_ids(9)
    plain = logits_of(model, ids)
    with lrp_rules(model, rules):
        ruled = logits_of(model, ids)
    torch.testing.assert_close(ruled, plain, atol=1e-5, rtol=0)
    assert (ruled - plain).abs().max() < 1e-5 < plain.abs().max()


def test_gemma_forward_under_the_rules_equals_the_plain_forward():
    model = tiny_causal_lm("gemma3_text")
    ids = random_ids(9)
    plain = logits_of(model, ids)
    with lrp_rules(model, "attnlrp"):
        ruled = logits_of(model, ids)
    torch.testing.assert_close(ruled, plain, atol=1e-5, rtol=0)


def test_a_norm_of_neither_convention_is_refused_by_name():
    model = tiny_causal_lm("llama")
    replace_norms(model, ShiftedRMSNorm)
    with pytest.raises(UnsupportedModelError, match="^ShiftedRMSNorm: its output is neither"):
        with lrp_rules(model, "attnlrp"):
            pass
    assert all("forward" not in m.__dict__ for m in model.modules())  # nothing left installed
