"""BART-style encoder-decoders (bart, plbart, marian, blenderbot-small, mbart, pegasus, blenderbot):
the rules keep the forward and are undone, CP-LRP conserves over source + decoder tokens on a
bias-free float64 copy, the cross-attention, MLP and LayerNorm rules match hand formulas, and the
same types built as the decoder alone are causal LMs (the conformance suite covers those)."""

import json

import pytest
import torch

from lrp_llm.archs import arch_for_model_type, find_arch, get_arch
from lrp_llm.archs.bart import BART_FAMILY, MBART_FAMILY
from lrp_llm.archs.blocks import find_parts
from lrp_llm.engines.explain import explain
from lrp_llm.engines.seq2seq import seq2seq_relevance
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.context import lrp_rules
from synthetic_tasks import copy_reverse
from tests.support.tiny_any import tiny_model
from tests.support.tiny_bart import SEQ2SEQ_TYPES, tiny_seq2seq, without_biases_and_positions

SRC = [5, 7, 9, 11, 13, 17, 2]
ANSWER = [8, 10, 12, 14, 2]


def _logits(model, src=SRC, answer=ANSWER):
    dec = torch.tensor([[0] + answer[:-1]])
    return model(input_ids=torch.tensor([src]), decoder_input_ids=dec).logits


def _state(model):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return hooks, sum("forward" in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("model_type", SEQ2SEQ_TYPES)
def test_encoder_decoder_spec_is_chosen_by_the_config(model_type):
    model = tiny_seq2seq(model_type)
    spec = get_arch(model)
    assert spec.kind == "seq2seq" and model_type in spec.model_types
    assert spec is arch_for_model_type(model_type, encoder_decoder=True)
    decoder_alone = tiny_model(model_type)
    assert not decoder_alone.config.is_encoder_decoder
    assert find_arch(decoder_alone) is arch_for_model_type(model_type)
    assert find_arch(decoder_alone).kind == "causal-lm" and find_arch(decoder_alone).encoder_decoder is spec


@pytest.mark.parametrize("model_type", SEQ2SEQ_TYPES)
def test_forward_is_unchanged_under_every_rule_set_and_restored(model_type):
    model = tiny_seq2seq(model_type)
    ref = _logits(model)
    before = _state(model)
    for rules in ("attnlrp", "cp-lrp"):
        with lrp_rules(model, rules) as patch, torch.no_grad():
            assert patch._undo
            torch.testing.assert_close(_logits(model), ref, atol=1e-5, rtol=1e-5)
        assert _state(model) == before
        assert torch.equal(_logits(model), ref)


def test_model_is_restored_after_an_exception():
    model = tiny_seq2seq("bart")
    ref, before = _logits(model), _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        with lrp_rules(model, "attnlrp"):
            raise RuntimeError("boom")
    assert _state(model) == before and torch.equal(_logits(model), ref)


@pytest.mark.parametrize("model_type", SEQ2SEQ_TYPES)
@pytest.mark.parametrize("scale_embedding", [False, True])
def test_cp_lrp_conserves_over_source_and_decoder_tokens(model_type, scale_embedding):
    model = tiny_seq2seq(model_type, dtype=torch.float64, scale_embedding=scale_embedding)
    model = without_biases_and_positions(model)
    out = seq2seq_relevance(model, SRC, ANSWER, method="cp-lrp")
    ratio = (out["source"].sum(1) + out["decoder"].sum(1)) / out["logits"]
    assert torch.allclose(ratio, torch.ones_like(ratio), rtol=0, atol=1e-4), ratio
    # both sides carry relevance, and the explained logits are the model's own (input_ids path)
    assert out["source"].abs().sum() > 0.01 * out["decoder"].abs().sum() > 0
    want = _logits(model)[0, torch.arange(len(ANSWER)), torch.tensor(ANSWER)]
    torch.testing.assert_close(out["logits"].to(want.dtype), want, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("model_type", ["marian", "pegasus", "bart"])
def test_the_engine_explains_the_logits_of_input_ids_with_scale_embedding(model_type):
    """Marian and Pegasus scale ``input_ids``' embeddings in the stack, and their encoders skip the
    scale for ``inputs_embeds``: the engine must hand each stack what its ``input_ids`` path computes."""
    model = tiny_seq2seq(model_type, scale_embedding=True)
    out = seq2seq_relevance(model, SRC, ANSWER, method="attnlrp")
    want = _logits(model)[0, torch.arange(len(ANSWER)), torch.tensor(ANSWER)]
    torch.testing.assert_close(out["logits"], want, atol=1e-5, rtol=1e-5)
    assert all(getattr(s, "embed_scale", 1.0) != 1.0 for s in (model.get_encoder(), model.get_decoder())) or (
        model_type == "bart"
    )


# ------------------------------------------------------------------ the parts against hand formulas
def _heads(x, n):  # (pos, d) -> (heads, pos, head_dim)
    return x.view(x.shape[0], n, -1).transpose(0, 1)


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_cross_attention_gradients_match_the_hand_written_rule(rules):
    """Q from the decoder, K and V from the encoder output: Q and K x 1/4 and V x 1/2 (AttnLRP) or
    Q and K constants (CP-LRP), with the softmax's own gradient written out by hand."""
    model = tiny_seq2seq("bart", dtype=torch.float64)
    attn = model.get_decoder().layers[0].encoder_attn
    g = torch.Generator().manual_seed(3)
    dec = torch.randn(1, 4, 32, generator=g, dtype=torch.float64)
    enc = torch.randn(1, 6, 32, generator=g, dtype=torch.float64)
    cot = torch.randn(1, 4, 32, generator=g, dtype=torch.float64)
    with lrp_rules(model, rules):
        d, e = dec.clone().requires_grad_(True), enc.clone().requires_grad_(True)
        out, _ = attn(d, key_value_states=e)
        grad_d, grad_e = torch.autograd.grad((out * cot).sum(), (d, e), allow_unused=True)
    grad_d = torch.zeros_like(dec) if grad_d is None else grad_d
    n, s = attn.num_heads, attn.scaling
    q, k, v = (_heads(lin(x[0]), n) for lin, x in ((attn.q_proj, dec), (attn.k_proj, enc), (attn.v_proj, enc)))
    a = torch.softmax(s * q @ k.transpose(1, 2), dim=-1)  # (heads, 4, 6)
    d_ctx = _heads(cot[0] @ attn.out_proj.weight, n)  # gradient at the heads' outputs A V
    d_v = a.transpose(1, 2) @ d_ctx
    d_a = d_ctx @ v.transpose(1, 2)
    d_scores = a * (d_a - (d_a * a).sum(-1, keepdim=True))  # softmax's Jacobian
    d_q, d_k = s * d_scores @ k, s * d_scores.transpose(1, 2) @ q
    fq, fk, fv = (0.25, 0.25, 0.5) if rules == "attnlrp" else (0.0, 0.0, 1.0)

    def back(t):  # (heads, pos, head_dim) -> (pos, d)
        return t.transpose(0, 1).reshape(t.shape[1], -1)

    want_d = fq * back(d_q) @ attn.q_proj.weight
    want_e = fk * back(d_k) @ attn.k_proj.weight + fv * back(d_v) @ attn.v_proj.weight
    torch.testing.assert_close(grad_d[0], want_d, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad_e[0], want_e, atol=1e-10, rtol=0)


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_mlp_activation_gets_the_identity_rule(rules):
    # RelP is patching's rule set: offered on the decoder alone (the causal LM), whose blocks are the same
    model = tiny_model("mbart", dtype=torch.float64) if rules == "relp" else tiny_seq2seq("mbart", dtype=torch.float64)
    block = model.get_decoder().layers[1] if rules == "relp" else model.get_encoder().layers[1]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 32, generator=g, dtype=torch.float64)
    c = torch.randn(5, 32, generator=g, dtype=torch.float64)
    with lrp_rules(model, rules):
        xr = x.clone().requires_grad_(True)
        out = block.fc2(block.activation_fn(block.fc1(xr)))
        (grad,) = torch.autograd.grad((out * c).sum(), xr)
    a = x @ block.fc1.weight.T + block.fc1.bias
    gelu = torch.nn.functional.gelu(a)
    want = ((c @ block.fc2.weight) * gelu / a) @ block.fc1.weight  # the identity rule: gelu(a) / a
    torch.testing.assert_close(grad, want, atol=1e-10, rtol=0)


def test_layer_norm_with_bias_detaches_sigma():
    model = tiny_seq2seq("bart", dtype=torch.float64)
    norm = model.get_decoder().layers[0].encoder_attn_layer_norm
    assert norm.bias.abs().sum() > 0  # a real bias, which the rule passes through
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 32, generator=g, dtype=torch.float64)
    c = torch.randn(3, 32, generator=g, dtype=torch.float64)
    with lrp_rules(model, "cp-lrp"):
        xr = x.clone().requires_grad_(True)
        out = norm(xr)
        (grad,) = torch.autograd.grad((out * c).sum(), xr)
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(x, (32,), norm.weight, norm.bias, norm.eps))
    centred = x - x.mean(-1, keepdim=True)
    sigma = torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + norm.eps)
    h = c * norm.weight / sigma
    torch.testing.assert_close(grad, h - h.mean(-1, keepdim=True), atol=1e-12, rtol=0)


@pytest.mark.parametrize("model_type", SEQ2SEQ_TYPES)
def test_every_part_is_found_and_counted(model_type):
    model = tiny_seq2seq(model_type)
    spec = get_arch(model)
    parts = find_parts(model, spec.parts)
    assert len(parts["attentions"]) == 2 + 2 * 2 and len(parts["mlps"]) == 2 + 2
    pre_norm = model_type in ("mbart", "pegasus", "blenderbot")
    assert spec.family == ("mbart" if pre_norm else "bart")
    assert (MBART_FAMILY if pre_norm else BART_FAMILY).encoder_decoder is spec


def test_a_checkpoint_with_other_layer_counts_is_refused():
    model = tiny_seq2seq("bart")
    model.config.decoder_layers = 3  # the description would expect more modules than the model has
    with pytest.raises(UnsupportedModelError, match="expected 8 attention modules, 5 mlp modules, found 6, 4"):
        with lrp_rules(model, "attnlrp"):
            pass
    assert _state(model) == (0, 0)


def test_trocr_is_the_post_norm_decoder_alone():
    model = tiny_model("trocr")
    spec = get_arch(model)
    assert spec.kind == "causal-lm" and spec.family == "bart" and spec.encoder_decoder is None
    assert spec.parts == BART_FAMILY.parts and spec.blocks == BART_FAMILY.blocks


@pytest.mark.parametrize(
    "model_type,part",
    [("mvp", "MvpDecoder"), ("bigbird_pegasus", "BigBirdBlockSparseAttention"), ("whisper", "audio encoder")],
)
def test_unregistered_relatives_are_refused_with_one_line_naming_the_part(model_type, part):
    from transformers import AutoConfig

    model = type("Model", (torch.nn.Module,), {})()
    model.config = AutoConfig.for_model(model_type)
    with pytest.raises(
        UnsupportedModelError, match=rf"^unsupported architecture '{model_type}' \(.*{part}.*\); supported: .*bart"
    ) as err:
        get_arch(model)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ the Python API and a saved folder
@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bart") / "bart"
    tok = copy_reverse.make_tokenizer()
    model = tiny_seq2seq("bart", vocab_size=len(tok), eos_token_id=1, bos_token_id=1, forced_eos_token_id=None)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def test_a_saved_folder_loads_as_seq2seq_and_explains(bart_dir):
    from lrp_llm.checkpoints.loading import load_model

    assert json.loads((bart_dir / "config.json").read_text())["is_encoder_decoder"] is True
    model, tok = load_model(str(bart_dir))
    assert type(model).__name__ == "BartForConditionalGeneration"
    a = explain(model, tok, "reverse a b c", target="c b a", method="cp-lrp")
    assert a.source_tokens == ["reverse", "a", "b", "c", "</s>"] and a.tokens == ["<pad>", "c", "b", "a"]
    for t in a.targets:
        assert t.source_relevance.shape == (5,) and t.relevance.shape == (t.position,)
    generated = explain(model, tok, "copy d e", generate=3)
    assert 1 <= len(generated.targets) <= 3 and generated.method == "attnlrp"


def test_a_saved_mvp_folder_is_refused_naming_the_part(tmp_path):
    from lrp_llm.checkpoints.loading import load_model

    tiny_model("mvp").save_pretrained(str(tmp_path))
    with pytest.raises(
        UnsupportedModelError, match=r"^unsupported architecture 'mvp' \(MvpDecoder .*\) in .*; supported"
    ):
        load_model(str(tmp_path))


def test_a_saved_decoder_alone_loads_as_a_causal_lm(tmp_path):
    from lrp_llm.checkpoints.loading import load_model
    from lrp_llm.engines.causal_lm import relevance

    tok = copy_reverse.make_tokenizer()
    tiny_model("marian", vocab_size=len(tok)).save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    model, _ = load_model(str(tmp_path))
    assert type(model).__name__ == "MarianForCausalLM" and get_arch(model).kind == "causal-lm"
    out = relevance(model, [5, 7, 9, 11], [3], method="attnlrp")
    assert torch.isfinite(out["relevance"]).all()


@pytest.mark.parametrize("method", ["attnlrp", "cp-lrp"])
def test_batched_relevance_equals_one_example_at_a_time_with_scaled_embeddings(method):
    from lrp_llm.engines.seq2seq import batch_seq2seq_relevance

    model = tiny_seq2seq("marian", dtype=torch.float64, scale_embedding=True)
    sources, answers = [SRC, [6, 8, 2], [9, 4, 4, 7, 2]], [ANSWER, [3, 2], [5, 6, 7]]
    for (src, dec), s, a in zip(batch_seq2seq_relevance(model, sources, answers, method=method), sources, answers):
        one = seq2seq_relevance(model, s, a, method=method)
        torch.testing.assert_close(src, one["source"], atol=1e-9, rtol=0)
        torch.testing.assert_close(dec, one["decoder"], atol=1e-9, rtol=0)


@pytest.mark.parametrize("model_type", ["bart", "mbart"])
def test_attnlrp_is_exact_per_part_on_a_bias_free_model(model_type):
    """Each LayerNorm and MLP passes its relevance on whole; V gets half of the attention output's
    (self- and cross-attention), Q and K equal shares."""
    from tests.support.tiny_t5_vit import Tap

    model = without_biases_and_positions(tiny_seq2seq(model_type, dtype=torch.float64))
    parts = find_parts(model, get_arch(model).parts)
    with lrp_rules(model, "attnlrp"):
        tap = Tap()
        for i, m in enumerate(parts["norms"]):
            tap.input(f"norm{i}.in", m)
            tap.output(f"norm{i}.out", m)
        for i, m in enumerate(parts["mlps"]):
            tap.input(f"mlp{i}.in", m.fc1)
            tap.output(f"mlp{i}.out", m.fc2)
        for i, m in enumerate(parts["attentions"]):
            for proj in ("q_proj", "k_proj", "v_proj"):
                tap.input(f"att{i}.{proj}", getattr(m, proj))  # an alias: only this projection's gradient
            tap.output(f"att{i}.out", m.out_proj)
        try:
            src_e = model.get_input_embeddings()(torch.tensor([SRC])).detach().requires_grad_(True)
            dec_e = model.get_input_embeddings()(torch.tensor([[0] + ANSWER[:-1]])).detach().requires_grad_(True)
            logit = model(inputs_embeds=src_e, decoder_inputs_embeds=dec_e).logits[0, 3, ANSWER[3]]
            logit.backward()
        finally:
            tap.remove()
    for i in range(len(parts["norms"])):
        assert tap.rel(f"norm{i}.in") == pytest.approx(tap.rel(f"norm{i}.out"), rel=1e-9, abs=1e-12)
    for i in range(len(parts["mlps"])):
        assert tap.rel(f"mlp{i}.in") == pytest.approx(tap.rel(f"mlp{i}.out"), rel=1e-9, abs=1e-12)
    checked = 0
    for i in range(len(parts["attentions"])):
        out = tap.rel(f"att{i}.out")
        checked += abs(out) > 1e-6
        assert tap.rel(f"att{i}.v_proj") == pytest.approx(0.5 * out, rel=1e-9, abs=1e-12)
        assert tap.rel(f"att{i}.q_proj") == pytest.approx(tap.rel(f"att{i}.k_proj"), rel=1e-9, abs=1e-12)
    assert checked >= 4  # not all trivially zero
