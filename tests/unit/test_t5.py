"""AttnLRP and CP-LRP for T5 v1.0 (ReLU) and v1.1 / Flan-T5 (gated GELU) encoder-decoders."""

import json

import numpy as np
import pytest
import torch

from lrp_llm.archs.blocks import find_parts
from lrp_llm.archs.t5 import T5_FAMILY
from lrp_llm.engines.explain import explain
from lrp_llm.engines.generation import generate_greedy
from lrp_llm.engines.seq2seq import seq2seq_relevance
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.results.attribution import Attribution
from synthetic_tasks import copy_reverse
from tests.support.tiny_t5_vit import Tap, tiny_t5

VERSIONS = ("v1.0", "v1.1")
SRC = [5, 7, 9, 11, 13, 17, 1]
ANSWER = [8, 10, 12, 14, 1]


def _logits(model, src=SRC, answer=ANSWER):
    dec = torch.tensor([[0] + answer[:-1]])
    return model(input_ids=torch.tensor([src]), decoder_input_ids=dec).logits


def _no_patch_left(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert "forward" not in m.__dict__


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_forward_is_unchanged_under_the_rules_and_after(version, rules):
    model = tiny_t5(version)
    ref = _logits(model)
    with lrp_rules(model, rules):
        got = _logits(model)
    assert (got - ref).abs().max() <= 1e-5
    assert torch.equal(_logits(model), ref)
    _no_patch_left(model)


@pytest.mark.parametrize("version", VERSIONS)
def test_model_is_restored_after_an_exception_and_a_second_model_is_untouched(version):
    model, other = tiny_t5(version), tiny_t5(version)
    ref = _logits(model)
    src_e = other.get_input_embeddings()(torch.tensor([SRC])).detach().requires_grad_(True)
    dec_e = other.get_input_embeddings()(torch.tensor([[0] + ANSWER[:-1]])).detach().requires_grad_(True)

    def other_grad():
        out = other(inputs_embeds=src_e, decoder_inputs_embeds=dec_e).logits[0, 2, ANSWER[2]]
        return torch.autograd.grad(out, (src_e, dec_e))

    plain = other_grad()
    with pytest.raises(RuntimeError, match="boom"):
        with lrp_rules(model, "attnlrp"):
            during = other_grad()
            raise RuntimeError("boom")
    for a, b in zip(plain, during):
        assert torch.equal(a, b)
    assert torch.equal(_logits(model), ref)
    _no_patch_left(model)


@pytest.mark.parametrize("version", VERSIONS)
def test_cp_lrp_conserves_the_logit_over_encoder_and_decoder_tokens(version):
    model = tiny_t5(version, dtype=torch.float64)
    out = seq2seq_relevance(model, SRC, ANSWER, method="cp-lrp")
    total = out["source"].sum(1) + out["decoder"].sum(1)
    ratio = total / out["logits"]
    assert torch.allclose(ratio, torch.ones_like(ratio), rtol=0, atol=1e-4), ratio
    # both sides carry relevance: the decoder tokens are not ignored
    assert out["decoder"][1:].abs().sum() > 0.01 * out["source"][1:].abs().sum()


@pytest.mark.parametrize("version", VERSIONS)
def test_attnlrp_is_exact_per_step(version):
    """Each norm and MLP conserves; the value path gets half the attention output; q and k get equal shares."""
    model = tiny_t5(version, dtype=torch.float64)
    parts = find_parts(model, T5_FAMILY.parts)
    with lrp_rules(model, "attnlrp"):
        tap = Tap()
        for i, m in enumerate(parts["norms"]):
            tap.input(f"norm{i}.in", m)
            tap.output(f"norm{i}.out", m)
        for i, m in enumerate(parts["mlps"] + parts["gated_mlps"]):
            tap.input(f"mlp{i}.in", m)
            tap.output(f"mlp{i}.out", m)
        for i, m in enumerate(parts["attentions"]):
            for proj in ("q", "k", "v"):
                tap.input(f"att{i}.{proj}", getattr(m, proj))
            tap.output(f"att{i}.out", m)
        try:
            src_e = model.get_input_embeddings()(torch.tensor([SRC])).detach().requires_grad_(True)
            dec_e = model.get_input_embeddings()(torch.tensor([[0] + ANSWER[:-1]])).detach().requires_grad_(True)
            logit = model(inputs_embeds=src_e, decoder_inputs_embeds=dec_e).logits[0, 3, ANSWER[3]]
            logit.backward()
        finally:
            tap.remove()
    n_checked = 0
    for i in range(len(parts["norms"])):
        assert tap.rel(f"norm{i}.in") == pytest.approx(tap.rel(f"norm{i}.out"), rel=1e-9, abs=1e-12)
    for i in range(len(parts["mlps"]) + len(parts["gated_mlps"])):
        assert tap.rel(f"mlp{i}.in") == pytest.approx(tap.rel(f"mlp{i}.out"), rel=1e-9, abs=1e-12)
    for i in range(len(parts["attentions"])):
        out = tap.rel(f"att{i}.out")
        n_checked += abs(out) > 1e-6
        assert tap.rel(f"att{i}.v") == pytest.approx(0.5 * out, rel=1e-9, abs=1e-12)
        assert tap.rel(f"att{i}.q") == pytest.approx(tap.rel(f"att{i}.k"), rel=1e-9, abs=1e-12)
    assert n_checked >= 4  # the checks are not all trivially zero
    total = float(((src_e * src_e.grad).sum() + (dec_e * dec_e.grad).sum()).detach())
    ratio = total / float(logit.detach())
    print(f"T5 {version} AttnLRP overall conservation ratio: {ratio:.3f}")
    assert np.isfinite(ratio)


def _mlp_relevance(model, mlp, x, cotangent, rules):
    """Relevance at the MLP input for the output relevance ``mlp(x) * cotangent``."""
    x = x.clone().requires_grad_(True)
    with lrp_rules(model, rules):
        (mlp(x) * cotangent).sum().backward()
    return x * x.grad


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_gated_gelu_mlp_matches_the_hand_written_rule(rules):
    model = tiny_t5("v1.1", dtype=torch.float64)
    mlp = find_parts(model, T5_FAMILY.parts)["gated_mlps"][0]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 32, generator=g, dtype=torch.float64)
    c = torch.randn(5, 32, generator=g, dtype=torch.float64)
    got = _mlp_relevance(model, mlp, x, c, rules)
    w0, w1, wo = mlp.wi_0.weight, mlp.wi_1.weight, mlp.wo.weight
    a, u = x @ w0.T, x @ w1.T
    act = mlp.act(a)
    gh = c @ wo  # gradient at the product act(a) * u
    if rules == "attnlrp":  # half to each factor; identity rule act(a) / a on the activation
        want = x * ((0.5 * gh * u * act / a) @ w0 + (0.5 * gh * act) @ w1)
    else:  # the gate is a constant
        want = x * ((gh * act) @ w1)
    assert torch.allclose(got, want, atol=1e-10)
    assert torch.allclose(got.sum(), (mlp(x) * c).sum())  # and it conserves


def test_relu_mlp_matches_the_hand_written_rule():
    model = tiny_t5("v1.0", dtype=torch.float64)
    mlp = find_parts(model, T5_FAMILY.parts)["mlps"][0]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 32, generator=g, dtype=torch.float64)
    c = torch.randn(5, 32, generator=g, dtype=torch.float64)
    got = _mlp_relevance(model, mlp, x, c, "attnlrp")
    a = x @ mlp.wi.weight.T
    want = x * (((c @ mlp.wo.weight) * (a > 0)) @ mlp.wi.weight)
    assert torch.allclose(got, want, atol=1e-10)


def test_explain_dispatches_to_seq2seq_and_json_keeps_both_sides():
    tok = copy_reverse.make_tokenizer()
    model = tiny_t5("v1.1", vocab=len(tok))
    a = explain(model, tok, "reverse a b c", target="c b a", method="cp-lrp")
    assert a.source_tokens == ["reverse", "a", "b", "c", "</s>"]
    assert a.tokens == ["<pad>", "c", "b", "a"] and a.prompt_length == 1 and a.answer == "cba"
    assert [t.position for t in a.targets] == [1, 2, 3]
    for t in a.targets:
        assert t.source_relevance.shape == (5,) and t.relevance.shape == (t.position,)
        both = float(t.source_relevance.astype(np.float64).sum() + t.relevance.astype(np.float64).sum())
        assert t.relevance_sum == pytest.approx(both, rel=1e-5)
        assert t.conservation == pytest.approx(1.0, abs=1e-3)
    d = json.loads(a.to_json())
    for key in ("model", "method", "tokens", "input_ids", "prompt_length", "seconds", "targets"):
        assert key in d
    assert d["source_tokens"] == a.source_tokens and "source_relevance" in d["targets"][0]
    back = Attribution.from_json(a.to_json())
    assert back.source_tokens == a.source_tokens and back.source_ids == a.source_ids
    assert np.allclose(back.targets[2].source_relevance, a.targets[2].source_relevance)


def test_greedy_generation_matches_transformers_generate():
    tok = copy_reverse.make_tokenizer()
    model = tiny_t5("v1.0", vocab=len(tok), seed=2)
    src = tok("copy d e f g")["input_ids"]
    ours = generate_greedy(model, src, 6, stop={1})
    ref = model.generate(input_ids=torch.tensor([src]), max_new_tokens=6, do_sample=False, eos_token_id=1)
    assert ours == ref[0, 1:].tolist()[: len(ours)]
    a = explain(model, tok, "copy d e f g", generate=6)
    assert a.input_ids[1:] == ours


@pytest.mark.parametrize("method", ["grad-x-input", "saliency", "integrated-gradients", "random"])
def test_baselines_run_on_t5(method):
    model = tiny_t5("v1.1")
    out = seq2seq_relevance(model, SRC, ANSWER, method=method, steps=4)
    assert out["source"].shape == (len(ANSWER), len(SRC))
    assert out["decoder"].shape == (len(ANSWER), len(ANSWER))
    assert torch.isfinite(out["source"]).all()
    assert (out["decoder"].triu(1) == 0).all()  # causal: nothing from later decoder tokens


@pytest.mark.parametrize("method", ["attnlrp", "cp-lrp", "grad-x-input", "saliency"])
def test_batched_relevance_equals_one_example_at_a_time(method):
    from lrp_llm.engines.seq2seq import batch_seq2seq_relevance

    model = tiny_t5("v1.1", dtype=torch.float64)
    sources = [SRC, [6, 8, 1], [9, 4, 4, 7, 1]]
    answers = [ANSWER, [3, 1], [5, 6, 7]]
    batch = batch_seq2seq_relevance(model, sources, answers, method=method)
    for (src, dec), s, a in zip(batch, sources, answers):
        one = seq2seq_relevance(model, s, a, method=method)
        assert torch.allclose(src, one["source"], atol=1e-9) and torch.allclose(dec, one["decoder"], atol=1e-9)


def test_mt5_with_fewer_decoder_layers_gets_the_same_rules():
    from transformers import MT5Config, MT5ForConditionalGeneration

    config = MT5Config(vocab_size=40, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=1, num_heads=4,
                       relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    model = MT5ForConditionalGeneration(config).eval()
    ref = _logits(model)
    with lrp_rules(model, "attnlrp"):
        assert (_logits(model) - ref).abs().max() <= 1e-5
    out = seq2seq_relevance(model.double(), SRC, ANSWER, method="cp-lrp")
    ratio = (out["source"].sum(1) + out["decoder"].sum(1)) / out["logits"]
    assert torch.allclose(ratio, torch.ones_like(ratio), rtol=0, atol=1e-4)
