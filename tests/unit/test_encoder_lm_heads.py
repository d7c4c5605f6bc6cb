"""Encoders that transformers also registers as causal LMs are refused where a text generator is explained."""

import pytest
import torch

from lrp_llm import explain
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.errors import InputError
from tests.support.encoders import tiny_encoder
from tests.support.models import tiny_tokenizer

LM_HEAD = "is an encoder .* with a language-model head; LRP rules for it are not supported as a causal LM"


def tiny_encoder_lm(model_type: str):
    """BertLMHeadModel / RobertaForCausalLM with tiny random weights (decoder mode, as transformers wants)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        model_type,
        vocab_size=61,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        is_decoder=True,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize(("model_type", "class_name"), [("bert", "BertLMHeadModel"), ("roberta", "RobertaForCausalLM")])
def test_relevance_refuses_an_encoder_with_a_language_model_head(model_type, class_name):
    model = tiny_encoder_lm(model_type)
    assert type(model).__name__ == class_name
    for method in (None, "attnlrp", "cp-lrp", "grad-x-input"):
        with pytest.raises(InputError, match=LM_HEAD) as caught:
            relevance(model, [2, 5, 6, 7, 8], [4], method=method)
        message = str(caught.value)
        assert message.startswith(class_name)
        assert "\n" not in message and "xai-tui similarity" in message


def test_explain_refuses_it_before_generating():
    model = tiny_encoder_lm("bert")
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    with pytest.raises(InputError, match=LM_HEAD):
        explain(model, tiny_tokenizer(), "the people of normandy", generate=3)
    assert calls == []  # refused up front, not after a generation


def test_a_bare_encoder_keeps_its_own_message():
    model = tiny_encoder()
    with pytest.raises(InputError, match="embedding \\(encoder\\) model without a language-model head"):
        relevance(model, [2, 5, 6, 7, 8], [4])
    with pytest.raises(InputError, match="embedding \\(encoder\\) model without a language-model head"):
        explain(model, tiny_tokenizer(), "the people of normandy", generate=3)
