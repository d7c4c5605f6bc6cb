"""The explain API: prompts, targets, generation, methods and the Attribution data."""

import numpy as np
import pytest
import torch

from lrp_llm import Attribution, explain, load_model
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.engines.generation import build_prompt_ids
from lrp_llm.errors import InputError, UnsupportedModelError
from tests.support.models import random_ids, save_tiny_checkpoint, tiny_causal_lm, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama")
    return load_model(path)


def test_forced_target_is_explained_token_by_token(tiny):
    model, tok = tiny
    a = explain(model, tok, "the people of normandy", target="gave their name", method="attnlrp")
    assert a.prompt_length == 4
    assert [t.token for t in a.targets] == tok.convert_ids_to_tokens(tok("gave their name")["input_ids"])
    for t in a.targets:
        assert len(t.relevance) == t.position
        assert a.tokens[t.position] == t.token
        assert t.relevance_sum == pytest.approx(float(np.sum(t.relevance, dtype=np.float64)), rel=1e-5)


def test_generation_is_greedy_and_stops_at_the_limit(tiny):
    model, tok = tiny
    a = explain(model, tok, "what country is", generate=5, method="grad-x-input")
    ids = torch.tensor([a.input_ids[: a.prompt_length]])
    expected = model.generate(ids, max_new_tokens=5, do_sample=False, eos_token_id=2, pad_token_id=0)[0].tolist()
    assert a.input_ids == expected[: len(a.input_ids)]
    assert 1 <= len(a.targets) <= 5


def test_context_builds_a_chat_turn_with_the_template():
    tok = tiny_tokenizer()
    ids = build_prompt_ids(tok, "what country", context="paris is in france")
    assert tok.convert_ids_to_tokens(ids) == [
        "<|user|>",
        "paris",
        "is",
        "in",
        "france",
        "what",
        "country",
        "<|assistant|>",
    ]
    assert tok.convert_ids_to_tokens(build_prompt_ids(tok, "what country")) == ["what", "country"]


def test_json_round_trip_keeps_every_field(tiny, tmp_path):
    model, tok = tiny
    a = explain(model, tok, "the old city", generate=3, method="cp-lrp")
    a.save(tmp_path / "a.json")
    b = Attribution.load(tmp_path / "a.json")
    assert b.to_dict() == a.to_dict()
    d = a.to_dict()
    assert {"model", "method", "tokens", "input_ids", "prompt_length", "seconds", "targets"} <= set(d)
    assert {"position", "token", "id", "logit", "relevance", "relevance_sum"} <= set(d["targets"][0])


def test_saliency_is_non_negative_and_random_is_seeded():
    model = tiny_causal_lm("llama")
    ids = random_ids(10)
    sal = relevance(model, ids, [9], method="saliency")["relevance"][0, :9]
    assert (sal >= 0).all()
    r1 = relevance(model, ids, [9], method="random", seed=3)["relevance"]
    r2 = relevance(model, ids, [9], method="random", seed=3)["relevance"]
    r3 = relevance(model, ids, [9], method="random", seed=4)["relevance"]
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)


def test_integrated_gradients_equals_an_explicit_riemann_sum():
    # independent formula: x * mean_k grad f(alpha_k x), alpha_k = (k + 1/2) / m, one plain backward each
    model = tiny_causal_lm("llama", dtype=torch.float64)
    ids = random_ids(8)
    m = 6
    with torch.no_grad():
        x = model.get_input_embeddings()(torch.tensor([ids]))
    total = torch.zeros_like(x)
    for k in range(m):
        e = ((k + 0.5) / m * x).requires_grad_(True)
        model(inputs_embeds=e).logits[0, 6, ids[7]].backward()
        total += e.grad
    expected = (x * total / m).sum(-1)[0]
    out = relevance(model, ids, [7], method="integrated-gradients", steps=m, ig_batch=4)
    assert torch.allclose(out["relevance"][0, :7], expected[:7], atol=1e-10)


def test_bad_inputs_raise_one_line_errors(tiny):
    model, tok = tiny
    with pytest.raises(InputError, match="prompt is empty"):
        explain(model, tok, "  ")
    with pytest.raises(InputError, match="unknown method"):
        explain(model, tok, "the city", target="old", method="lime")
    with pytest.raises(InputError, match="context is 256"):
        explain(model, tok, " ".join(["the"] * 300), target="old")


def test_unsupported_architecture_names_the_supported_ones():
    from transformers import XLNetConfig, XLNetLMHeadModel

    model = XLNetLMHeadModel(XLNetConfig(n_layer=1, d_model=16, n_head=2, d_inner=32, vocab_size=20))
    with pytest.raises(UnsupportedModelError, match=r"unsupported architecture 'xlnet' \(.*\); supported: .*llama"):
        relevance(model, [1, 2, 3], [2], method="attnlrp")
