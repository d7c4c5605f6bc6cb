"""Older causal LMs and BERT-style decoders: each refused type's one-line error names the part without a rule."""

from __future__ import annotations

import pytest
from torch import nn

from lrp_llm.archs import get_arch, supported_model_types
from lrp_llm.errors import UnsupportedModelError

# model type -> a word of the part its error must name
REFUSED_PARTS = {
    "bert-generation": "BertGenerationDecoder",
    "big_bird": "BigBirdBlockSparseAttention",
    "megatron-bert": "MegatronBertLayer",
    "rembert": "RemBertForCausalLM",
    "roberta-prelayernorm": "RobertaPreLayerNormLayer",
    "roc_bert": "RoCBertEmbeddings",
    "roformer": "RoFormerSelfAttention",
    "xlm-roberta-xl": "XLMRobertaXLLayer",
    "xmod": "XmodAdapter",
    "xlm": "MultiHeadAttention",
    "cpmant": "inputs_embeds",
    "xglm": "XGLMAttention",
    "reformer": "LSHSelfAttention",
    "xlnet": "XLNetRelativeAttention",
    "prophetnet": "ProphetNetNgramSelfAttention",
    "git": "GitProjection",
}


def _with_config(model_type: str) -> nn.Module:
    """A module carrying the type's default transformers config: what ``get_arch`` reads of a model."""
    from transformers import AutoConfig

    module = nn.Module()
    module.config = AutoConfig.for_model(model_type)
    return module


@pytest.mark.parametrize("model_type", sorted(REFUSED_PARTS))
def test_refused_type_names_its_part(model_type):
    assert model_type not in supported_model_types()
    with pytest.raises(UnsupportedModelError) as err:
        get_arch(_with_config(model_type))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"unsupported architecture '{model_type}' (")
    assert REFUSED_PARTS[model_type] in message.split("; supported:")[0]


def test_gpt_sw3_is_the_gpt2_layout():
    from lrp_llm.archs import arch_for_model_type

    assert arch_for_model_type("gpt-sw3").family == "gpt2"


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_ctrl_rules_leave_the_callers_embeddings_unchanged(rules):
    """CTRL scales ``inputs_embeds`` in place; under the rules the model gets a copy and the gradient still arrives."""
    import torch

    from lrp_llm.mechanism.context import lrp_rules
    from tests.support.conformance import tiny_for

    torch.manual_seed(0)
    model, inputs = tiny_for("ctrl", dtype=torch.float64)
    with torch.no_grad():
        want = model(**inputs).logits
        embeds = model.get_input_embeddings()(inputs["input_ids"])
    before = embeds.clone()
    embeds.requires_grad_(True)
    with lrp_rules(model, rules):
        logits = model(inputs_embeds=embeds).logits
        logits[0, -1, 3].backward()
    assert torch.equal(embeds.detach(), before)
    torch.testing.assert_close(logits.detach(), want, atol=1e-12, rtol=0)
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0


def test_ctrl_plain_gradient_methods_run_on_a_leaf():
    import torch

    from lrp_llm.engines.causal_lm import relevance
    from tests.support.conformance import tiny_for

    torch.manual_seed(0)
    model, _ = tiny_for("ctrl")
    out = relevance(model, [3, 7, 1, 9, 4, 2], [4, 5], method="grad-x-input")
    assert torch.isfinite(torch.as_tensor(out["relevance"])).all()
    assert torch.as_tensor(out["relevance"]).abs().sum() > 0
