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
