"""MPNet, DistilBERT, DeBERTa-v2 and ModernBERT for BiLRP: conservation on bias-free float64 copies, forward
and reverse mode agreeing, DeBERTa's disentangled attention and ModernBERT's GeGLU against hand formulas."""

from __future__ import annotations

import pytest
import torch

from lrp_llm.analyses.bilrp import first_order_map
from lrp_llm.archs import get_arch
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.context import lrp_rules
from tests.support.encoders import encoder_ids, torch_threads
from tests.support.more_encoders import MORE_ENCODER_TYPES, tiny_more_encoder

IDS = encoder_ids(9, seed=1)


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def _no_patch_left(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert "forward" not in m.__dict__ and "disentangled_attention_bias" not in m.__dict__


@pytest.mark.parametrize("model_type", MORE_ENCODER_TYPES)
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_cp_lrp_conserves_the_embedding_on_a_bias_free_copy(model_type, pooling):
    model = tiny_more_encoder(model_type, dtype=torch.float64, bias=False)
    assert get_arch(model).kind == "encoder"
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([IDS])).last_hidden_state[0]
    want = hidden.mean(0) if pooling == "mean" else hidden[0]
    for strategy in ("forward", "reverse"):
        phi, c = first_order_map(model, IDS, strategy=strategy, pooling=pooling)
        assert (phi - want).abs().max() <= 1e-10, strategy  # the embedding is the model's
        # each dimension's token contributions add up to it: exact without biases
        torch.testing.assert_close(c.sum(1), phi, atol=1e-9, rtol=1e-9)
    _no_patch_left(model)


@pytest.mark.parametrize("model_type", MORE_ENCODER_TYPES)
def test_attnlrp_forward_and_reverse_mode_give_the_same_map(model_type):
    """The rules are detach forms: forward mode (jvp) and reverse mode see the same modified Jacobian."""
    model = tiny_more_encoder(model_type, dtype=torch.float64, bias=True, seed=2)
    phi_f, c_f = first_order_map(model, IDS, rules="attnlrp", strategy="forward")
    phi_r, c_r = first_order_map(model, IDS, rules="attnlrp", strategy="reverse")
    torch.testing.assert_close(phi_f, phi_r, atol=1e-12, rtol=0)
    torch.testing.assert_close(c_f, c_r, atol=1e-6 * float(c_r.abs().max()), rtol=0)
    # AttnLRP is not the plain gradient: the rules changed something
    phi_g, c_g = first_order_map(model, IDS, method="grad-x-input-products", strategy="reverse")
    assert (c_g - c_r).abs().max() > 1e-3 * float(c_r.abs().max())


# ------------------------------------------------------------------ DeBERTa-v2 by hand
def _deberta_attention_call(model, ids):
    """The first layer's DisentangledSelfAttention and the arguments the model calls it with."""
    attn = model.encoder.layer[0].attention.self
    seen = {}

    def grab(_m, args, kwargs):
        seen["args"], seen["kwargs"] = args, kwargs

    handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
    finally:
        handle.remove()
    return attn, seen["args"], seen["kwargs"]


def _deberta_by_hand(attn, x, rel, cot, rules):
    """Output and rule-modified input gradient of DeBERTa's disentangled attention, written out.

    ``S[i, j] = (q_i k_j + q_i Pk[i - j + s] + k_j Pq[i - j + s]) / sqrt(3 dh)`` per head with
    ``Pk = rel Wk^T``, ``Pq = rel Wq^T`` (shared keys), ``out_i = sum_j softmax(S)[i, j] v_j``.
    AttnLRP: V gets 1/2 (A V), the scores 1/2; in ``q k`` each factor half of that, in the
    position terms q (resp. k) all of it. CP-LRP: A constant.
    """
    n, d = x.shape
    heads = attn.num_attention_heads
    dh = d // heads
    wq, wk, wv = attn.query_proj.weight, attn.key_proj.weight, attn.value_proj.weight
    span = attn.pos_ebd_size
    pos = torch.arange(n)
    idx = (pos[:, None] - pos[None, :] + span).clamp(0, 2 * span - 1)  # (n, n)
    pk, pq = rel[: 2 * span] @ wk.T, rel[: 2 * span] @ wq.T  # (2 span, d)
    split = lambda t: t.view(t.shape[0], heads, dh).transpose(0, 1)  # noqa: E731  (heads, rows, dh)
    q, k, v, pk, pq = split(x @ wq.T), split(x @ wk.T), split(x @ wv.T), split(pk), split(pq)
    pk_ij, pq_ij = pk[:, idx], pq[:, idx]  # (heads, n, n, dh)
    scale = float(torch.sqrt(torch.tensor(3.0 * dh, dtype=torch.float32)))  # DeBERTa rounds it to float32
    s = q @ k.transpose(1, 2) + torch.einsum("hid,hijd->hij", q, pk_ij) + torch.einsum("hjd,hijd->hij", k, pq_ij)
    a = torch.softmax(s / scale, -1)
    out = (a @ v).transpose(0, 1).reshape(n, d)
    c = split(cot)
    if rules == "cp-lrp":
        dv = a.transpose(1, 2) @ c
        return out, dv.transpose(0, 1).reshape(n, d) @ wv
    dv = 0.5 * a.transpose(1, 2) @ c
    da = 0.5 * c @ v.transpose(1, 2)  # (heads, n, n)
    ds = a * (da - (da * a).sum(-1, keepdim=True)) / scale  # the softmax's plain gradient
    dq = 0.5 * ds @ k + torch.einsum("hij,hijd->hid", ds, pk_ij)
    dk = 0.5 * ds.transpose(1, 2) @ q + torch.einsum("hij,hijd->hjd", ds, pq_ij)
    merge = lambda t: t.transpose(0, 1).reshape(n, d)  # noqa: E731
    return out, merge(dq) @ wq + merge(dk) @ wk + merge(dv) @ wv


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_deberta_disentangled_attention_matches_the_hand_formula(rules):
    # position_buckets=-1: relative positions i - j without log buckets, as the hand formula indexes them
    model = tiny_more_encoder("deberta-v2", dtype=torch.float64, bias=False, position_buckets=-1)
    attn, args, kwargs = _deberta_attention_call(model, IDS)
    x = args[0][0]
    rel = kwargs["rel_embeddings"] if "rel_embeddings" in kwargs else args[5]
    cot = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    want_out, want_grad = _deberta_by_hand(attn, x, rel, cot, rules)
    with lrp_rules(model, rules):
        xr = x[None].clone().requires_grad_(True)
        out = attn(xr, *args[1:], **kwargs)[0]
        (grad,) = torch.autograd.grad(out, xr, cot[None])
    torch.testing.assert_close(out[0], want_out, atol=1e-12, rtol=0)  # the hand formula is DeBERTa's forward
    torch.testing.assert_close(grad[0], want_grad, atol=1e-12, rtol=0)
    _no_patch_left(model)


def test_deberta_convolution_layer_is_refused_naming_it():
    model = tiny_more_encoder("deberta-v2", conv_kernel_size=3)
    with pytest.raises(UnsupportedModelError, match=r"ConvLayer \(conv_kernel_size > 0") as info:
        with lrp_rules(model, "cp-lrp"):
            pass
    assert "\n" not in str(info.value)
    _no_patch_left(model)


def test_rules_are_removed_after_an_exception():
    model = tiny_more_encoder("deberta-v2")
    x = torch.tensor([IDS])
    with torch.no_grad():
        ref = model(input_ids=x).last_hidden_state
    with pytest.raises(RuntimeError, match="boom"):
        with lrp_rules(model, "attnlrp"):
            raise RuntimeError("boom")
    _no_patch_left(model)
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).last_hidden_state, ref)


# ------------------------------------------------------------------ ModernBERT's GeGLU by hand
@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_modernbert_geglu_matches_the_hand_formula_in_both_modes(rules):
    model = tiny_more_encoder("modernbert", dtype=torch.float64, bias=False)
    mlp = model.layers[0].mlp
    g = torch.Generator().manual_seed(5)
    x = torch.randn(5, 32, dtype=torch.float64, generator=g)
    cot = torch.randn(5, 32, dtype=torch.float64, generator=g)
    tangent = torch.randn(5, 32, dtype=torch.float64, generator=g)
    w_a, w_g = mlp.Wi.weight.chunk(2, dim=0)  # act's half first, the gate's second
    a, u = x @ w_a.T, x @ w_g.T
    act = torch.nn.functional.gelu(a)
    h = cot @ mlp.Wo.weight  # gradient at the product act(a) * u
    if rules == "cp-lrp":  # act(a) a constant
        want = (h * act) @ w_g
    else:  # half to each factor; identity rule act(a) / a
        want = (0.5 * h * u * act / a) @ w_a + (0.5 * h * act) @ w_g
    with lrp_rules(model, rules):
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(mlp(xr), xr, cot)
        _, jt = torch.func.jvp(mlp, (x,), (tangent,))
    torch.testing.assert_close(grad, want, atol=1e-10, rtol=0)
    # forward mode applies the transpose of the same modified Jacobian: <cot, J t> = <J^T cot, t>
    torch.testing.assert_close((cot * jt).sum(), (want * tangent).sum(), atol=1e-9, rtol=0)
    torch.testing.assert_close((x * grad).sum(), (mlp(x) * cot).sum())  # conserves (bias-free)


# ------------------------------------------------------------------ a saved MPNet folder through the CLI
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_a_saved_sentence_transformers_mpnet_folder_works_with_xai_tui_similarity(tmp_path, capsys, pooling):
    """A tiny MPNet saved as sentence-transformers lays it out (all-mpnet-base-v2: mean pooling in
    ``1_Pooling``), explained by ``xai-tui similarity`` end to end: loaded as an encoder, the folder's
    pooling read, CP-LRP conserving."""
    import json

    from synthetic_tasks.shared_nouns import VOCAB, make_tokenizer
    from tui.cli import main

    folder = tmp_path / "tiny-mpnet"
    tiny_more_encoder("mpnet", vocab=len(VOCAB), bias=False).save_pretrained(str(folder))
    make_tokenizer().save_pretrained(str(folder))
    (folder / "1_Pooling").mkdir()
    modes = {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": pooling == "mean"}
    modes["pooling_mode_cls_token"] = pooling == "cls"
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(modes))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    out = tmp_path / "s.json"
    args = ["similarity", "--model", str(folder), "--a", "the cat sees a dog", "--b", "a dog near the tree"]
    assert main([*args, "--json", str(out), "--quiet", "--no-matrix"]) == 0
    d = json.loads(out.read_text())
    assert d["method"] == "bilrp" and d["rules"] == "cp-lrp" and d["pooling"] == pooling
    assert d["tokens_a"] == ["[CLS]", "the", "cat", "sees", "a", "dog", "[SEP]"]
    # bias-free: the pair relevance sums to the cosine similarity (float32)
    assert d["interaction_sum"] == pytest.approx(d["similarity"], rel=1e-4)
    assert "cosine" in capsys.readouterr().out


@pytest.mark.parametrize(
    "variant",
    [
        {"share_att_key": False},  # DeBERTa-v2: own pos_key_proj / pos_query_proj
        {"pos_att_type": ["c2p"], "position_biased_input": True, "type_vocab_size": 2},
        {"relative_attention": False, "position_biased_input": True},
    ],
)
def test_deberta_variants_conserve_and_both_modes_agree(variant):
    model = tiny_more_encoder("deberta-v2", dtype=torch.float64, bias=False, **variant)
    phi, c = first_order_map(model, IDS, strategy="forward")
    torch.testing.assert_close(c.sum(1), phi, atol=1e-9, rtol=1e-9)
    _, c_f = first_order_map(model, IDS, rules="attnlrp", strategy="forward")
    _, c_r = first_order_map(model, IDS, rules="attnlrp", strategy="reverse")
    torch.testing.assert_close(c_f, c_r, atol=1e-9, rtol=0)
