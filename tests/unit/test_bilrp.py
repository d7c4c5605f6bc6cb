"""BiLRP: conservation, batched strategies equal to the per-dimension loop, the baselines
against independent formulas, caching, results as data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrp_llm.analyses.bilrp import (
    SimilarityExplainer,
    TokenMap,
    first_order_map,
    pair_interactions,
)
from lrp_llm.errors import Cancelled, InputError
from lrp_llm.results.similarity import SimilarityExplanation
from synthetic_tasks.shared_nouns import make_tokenizer
from tests.support.encoders import ENCODER_TYPES, encoder_ids, tiny_encoder
from tests.support.models import random_ids, tiny_causal_lm

pytestmark = pytest.mark.usefixtures("one_thread")

IDS_A = encoder_ids(9, seed=1)
IDS_B = encoder_ids(7, seed=2)


def _map(model, ids, **kw) -> TokenMap:
    phi, c = first_order_map(model, ids, **kw)
    n = len(ids)
    return TokenMap("", [str(i) for i in ids], list(ids), [False] * n, phi.double().numpy(), c.double().numpy(), 0.0)


@pytest.fixture(scope="module")
def bias_free64():
    return tiny_encoder(dtype=torch.float64, bias=False)


@pytest.fixture(scope="module")
def biased32():
    return tiny_encoder(dtype=torch.float32, bias=True, seed=3)


# --------------------------------------------------------------- conservation
@pytest.mark.parametrize("strategy", ["replay", "forward", "reverse"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_cp_lrp_conservation_exact_without_biases(bias_free64, strategy, pooling):
    a = _map(bias_free64, IDS_A, strategy=strategy, pooling=pooling)
    b = _map(bias_free64, IDS_B, strategy=strategy, pooling=pooling)
    # first order: each dimension's contributions add up to the embedding
    assert np.allclose(a.contributions.sum(1), a.embedding, rtol=1e-9, atol=1e-9)
    dot = float(a.embedding @ b.embedding)
    cos = dot / (np.linalg.norm(a.embedding) * np.linalg.norm(b.embedding))
    r_dot = pair_interactions(a, b, "dot")
    r_cos = pair_interactions(a, b, "cosine")
    assert r_dot.shape == (len(IDS_A), len(IDS_B))
    assert abs(r_dot.sum() - dot) <= 1e-4 * abs(dot)
    assert abs(r_cos.sum() - cos) <= 1e-4 * abs(cos)


@pytest.mark.parametrize("model_type", ENCODER_TYPES)
def test_bert_relatives_conserve_with_replay_and_forward_mode(model_type):
    model = tiny_encoder(model_type, dtype=torch.float64, bias=False)
    for strategy in ("replay", "forward"):
        phi, c = first_order_map(model, IDS_A, strategy=strategy)
        assert torch.allclose(c.sum(1), phi, rtol=1e-9, atol=1e-9), strategy
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([IDS_A])).last_hidden_state.mean(1)[0]
    assert (phi - ref).abs().max() <= 1e-9


def test_conservation_ratio_reported_with_biases(biased32):
    tok = make_tokenizer()
    e = SimilarityExplainer(biased32, tok, pooling="mean").explain("the cat sees a dog", "a dog near the tree")
    assert np.isfinite(e.conservation)
    assert e.conservation == pytest.approx(e.interaction_sum / e.similarity)
    assert np.isfinite(e.meta["conservation_a"]) and np.isfinite(e.meta["conservation_b"])
    # biases absorb some relevance: not exactly conserved, but the same sign and order
    assert e.conservation != pytest.approx(1.0, abs=1e-6)


def test_embedding_matches_the_plain_model(biased32):
    with torch.no_grad():
        ref = biased32(input_ids=torch.tensor([IDS_A])).last_hidden_state.mean(1)[0]
    for strategy in ("replay", "forward", "reverse"):
        phi, _ = first_order_map(biased32, IDS_A, strategy=strategy)
        assert (phi - ref).abs().max() <= 1e-5, strategy


# -------------------------------------------------- batched == per-dimension loop
@pytest.mark.parametrize(
    "method,rules,strategies",
    [
        ("bilrp", "cp-lrp", ("replay", "forward", "reverse")),
        ("bilrp", "attnlrp", ("forward", "reverse")),
        ("grad-x-input-products", None, ("forward", "reverse")),
    ],
)
def test_batched_equals_per_dimension_loop(biased32, method, rules, strategies):
    _, loop = first_order_map(biased32, IDS_A, method=method, rules=rules, strategy="loop")
    for strategy in strategies:
        _, batched = first_order_map(biased32, IDS_A, method=method, rules=rules, strategy=strategy, chunk=4)
        assert (batched - loop).abs().max() <= 1e-5, strategy


def test_auto_strategy_picks_replay_for_cp_lrp_and_forward_otherwise(biased32, monkeypatch):
    import lrp_llm.analyses.bilrp as bilrp

    used = []
    for name in ("_replay_mode", "_forward_mode", "_reverse_mode"):
        original = getattr(bilrp, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            used.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(bilrp, name, spy)
    first_order_map(biased32, IDS_A, rules="cp-lrp")
    first_order_map(biased32, IDS_A, rules="attnlrp")
    first_order_map(biased32, list(range(4, 44)), rules="attnlrp")  # 40 tokens: longer than the embedding is wide (32)
    assert used == ["_replay_mode", "_forward_mode", "_reverse_mode"]


def test_auto_falls_back_to_forward_mode_where_the_replay_does_not_apply(monkeypatch):
    import lrp_llm.analyses.bilrp as bilrp

    model = tiny_encoder(dtype=torch.float32, seed=5)
    model.encoder.layer[1].chunk_size_feed_forward = 3  # a layout the replay does not compute
    used = []
    original = bilrp._forward_mode
    monkeypatch.setattr(bilrp, "_forward_mode", lambda *a, **k: used.append("forward") or original(*a, **k))
    phi, auto = first_order_map(model, IDS_A)
    assert used == ["forward"]
    _, loop = first_order_map(model, IDS_A, strategy="loop")
    assert (auto - loop).abs().max() <= 1e-5
    with pytest.raises(InputError, match="BERT-layout"):
        first_order_map(model, IDS_A, strategy="replay")


# ------------------------------------------------------ baselines, independently
def test_grad_x_input_products_is_the_hessian_product():
    """R[i, j] = x_a,i^T (d^2 <phi(a), phi(b)> / dx_a,i dx_b,j) x_b,j by double backward."""
    model = tiny_encoder(dtype=torch.float64, bias=True, seed=3, attn="eager")
    if True:
        norm = model.embeddings.LayerNorm
        xs = {}

        def capture(ids):
            out = []
            h = norm.register_forward_pre_hook(lambda _m, a: out.append(a[0].detach()))
            with torch.no_grad():
                model(input_ids=torch.tensor([ids]))
            h.remove()
            return out[0]

        xa, xb = capture(IDS_A), capture(IDS_B)

        def phi(ids, x):
            xs["x"] = x
            h = norm.register_forward_pre_hook(lambda _m, a: (xs["x"],))
            try:
                return model(input_ids=torch.tensor([ids])).last_hidden_state.mean(1)[0]
            finally:
                h.remove()

        a = xa.clone().requires_grad_(True)
        b = xb.clone().requires_grad_(True)
        y = phi(IDS_A, a) @ phi(IDS_B, b)
        (ga,) = torch.autograd.grad(y, a, create_graph=True)
        expected = torch.zeros(len(IDS_A), len(IDS_B), dtype=torch.float64)
        for i in range(len(IDS_A)):
            (gb,) = torch.autograd.grad((ga[0, i] * xa[0, i]).sum(), b, retain_graph=True)
            expected[i] = (gb[0] * xb[0]).sum(-1)
        ma = _map(model, IDS_A, method="grad-x-input-products")
        mb = _map(model, IDS_B, method="grad-x-input-products")
        got = pair_interactions(ma, mb, "dot")
        assert np.abs(got - expected.numpy()).max() <= 1e-8 * max(1.0, np.abs(expected.numpy()).max())


def test_embedding_dot_is_token_state_products(biased32):
    with torch.no_grad():
        ha = biased32(input_ids=torch.tensor([IDS_A])).last_hidden_state[0].double()
        hb = biased32(input_ids=torch.tensor([IDS_B])).last_hidden_state[0].double()
    expected = (ha @ hb.T) / (len(IDS_A) * len(IDS_B))
    got = pair_interactions(
        _map(biased32, IDS_A, method="embedding-dot"), _map(biased32, IDS_B, method="embedding-dot"), "dot"
    )
    assert np.abs(got - expected.numpy()).max() <= 1e-5
    assert got.sum() == pytest.approx(float(ha.mean(0) @ hb.mean(0)), rel=1e-5)  # mean pooling: exact


# -------------------------------------------------------------- the explainer
def test_rank_costs_n_plus_one_maps_and_sorts(biased32):
    tok = make_tokenizer()
    ex = SimilarityExplainer(biased32, tok, pooling="mean")
    texts = ["a dog near the tree", "the cat sees a dog", "red car", "the cat sees a dog"]
    results = ex.rank("the cat sees a dog", texts)
    assert ex.maps_computed == 3  # the query (also texts 1 and 3: cached) + 2 other texts
    sims = [r.similarity for r in results]
    assert sims == sorted(sims, reverse=True)
    assert results[0].similarity == pytest.approx(1.0)
    assert sorted(r.meta["index"] for r in results) == [0, 1, 2, 3]
    assert [r.meta["rank"] for r in results] == [1, 2, 3, 4]
    ex.explain("red car", "the cat sees a dog")
    assert ex.maps_computed == 3


def test_explanation_json_roundtrip_and_top_pairs(biased32, tmp_path):
    tok = make_tokenizer()
    e = SimilarityExplainer(biased32, tok, pooling="mean").explain("the cat sees a dog", "a dog near the cat")
    assert e.tokens_a[0] == "[CLS]" and e.special_a[0] and e.special_a[-1]
    path = tmp_path / "e.json"
    e.save(path)
    back = SimilarityExplanation.load(path)
    d = e.to_dict()
    for key in ("tokens_a", "tokens_b", "interactions", "similarity", "dot", "interaction_sum", "seconds"):
        assert key in d
    assert np.allclose(back.interactions, e.interactions)
    assert back.tokens_b == e.tokens_b and back.similarity == e.similarity and back.special_b == e.special_b
    top = e.top_pairs(3)
    assert len(top) == 3
    assert all(not e.special_a[i] and not e.special_b[j] for i, j, _ in top)
    values = [v for _, _, v in top]
    assert values == sorted(values, reverse=True)
    inner = e.interactions[1:-1, 1:-1]
    assert values[0] == pytest.approx(float(inner.max()))
    neg = e.top_pairs(1, sign=-1)
    assert neg[0][2] == pytest.approx(float(inner.min()))


def test_input_errors_are_one_line(biased32):
    tok = make_tokenizer()
    with pytest.raises(InputError, match="empty"):
        SimilarityExplainer(biased32, tok).explain("  ", "a dog")
    with pytest.raises(InputError, match="unknown method"):
        SimilarityExplainer(biased32, tok, method="magic")
    with pytest.raises(InputError, match="unknown rule set"):
        SimilarityExplainer(biased32, tok, rules="zennit")
    with pytest.raises(InputError, match="at most 64"):
        SimilarityExplainer(biased32, tok).explain("the " * 70, "a dog")
    with pytest.raises(InputError, match="replay"):
        first_order_map(biased32, IDS_A, rules="attnlrp", strategy="replay")


@pytest.mark.parametrize("strategy", ["replay", "forward", "reverse", "loop"])
def test_cancel_restores_the_model(biased32, strategy):
    with torch.no_grad():
        ref = biased32(input_ids=torch.tensor([IDS_A])).last_hidden_state
    with pytest.raises(Cancelled):
        first_order_map(biased32, IDS_A, strategy=strategy, should_cancel=lambda: True)
    assert not any("forward" in m.__dict__ for m in biased32.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in biased32.modules())
    assert all(p.requires_grad for p in biased32.parameters())
    with torch.no_grad():
        assert torch.equal(biased32(input_ids=torch.tensor([IDS_A])).last_hidden_state, ref)


def test_second_model_untouched(biased32):
    other = tiny_encoder(seed=7)
    with torch.no_grad():
        ref = other(input_ids=torch.tensor([IDS_A])).last_hidden_state
    first_order_map(biased32, IDS_A)
    with torch.no_grad():
        assert torch.equal(other(input_ids=torch.tensor([IDS_A])).last_hidden_state, ref)


# ------------------------------------------------------- decoder embeddings
def test_decoder_embedding_model_reuses_llama_rules():
    model = tiny_causal_lm("llama", dtype=torch.float64)  # bias-free
    ids_a, ids_b = random_ids(8, seed=1), random_ids(6, seed=2)
    a = _map(model, ids_a, pooling="last")
    b = _map(model, ids_b, pooling="last")
    with torch.no_grad():
        ref = model.model(input_ids=torch.tensor([ids_a])).last_hidden_state[0, -1]
    assert np.abs(a.embedding - ref.numpy()).max() <= 1e-5  # HF RMSNorm computes in float32 even for float64
    dot = float(a.embedding @ b.embedding)
    assert pair_interactions(a, b, "dot").sum() == pytest.approx(dot, rel=1e-4)
    _, loop = first_order_map(model, ids_a, pooling="last", strategy="loop")
    assert np.abs(a.contributions - loop.numpy()).max() <= 1e-8
