"""The perturbation's cached-prefix path: an input with positions S removed equals the unperturbed one
before min(S), so only the later positions are computed. Checked against one full forward per input, and
the fall-backs (no plain cache, a cache that does not reproduce the model) against the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrp_llm.analyses import evaluate as ev
from lrp_llm.analyses.evaluate import perturbation_curves, perturbation_curves_many
from tests.support.models import random_ids, tiny_causal_lm


def _tokens_through_first_block(model) -> tuple[list[int], object]:
    """A counter of the positions the first block computes (rows x positions), and its hook handle."""
    seen = [0]

    def count(_m, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        seen[0] += hidden.shape[0] * hidden.shape[1]

    return seen, model.model.layers[0].register_forward_pre_hook(count, with_kwargs=True)


def _one_forward_each(model, ids, position, removed: set[int], strategy: str, neutral_id: int) -> tuple[float, float]:
    with torch.no_grad():
        x = torch.tensor([ids[:position]])
        if strategy == "neutral":
            x = torch.tensor([[neutral_id if i in removed else t for i, t in enumerate(ids[:position])]])
        e = model.get_input_embeddings()(x)
        if strategy == "zero" and removed:
            e[0, sorted(removed)] = 0.0
        logits = model(inputs_embeds=e).logits[0, -1].double()
    return float(logits[ids[position]]), float(torch.softmax(logits, -1)[ids[position]])


@pytest.mark.parametrize("strategy", ["zero", "neutral"])
def test_cached_prefix_matches_full_forwards_and_computes_less(strategy, monkeypatch):
    model = tiny_causal_lm("llama", vocab=61, dtype=torch.float64)
    ids = random_ids(24, seed=5)
    position = 23
    cand = list(range(6, position))  # a fixed head (a template) is never removed: it is always cached
    rels = {m: np.random.default_rng(s).normal(size=position) for s, m in enumerate(("a", "b", "c"))}
    seen, handle = _tokens_through_first_block(model)
    try:
        many = perturbation_curves_many(
            model, ids, position, rels, candidates=cand, strategy=strategy, steps=5, neutral_id=7, batch_size=4
        )
    finally:
        handle.remove()
    for key, rel in rels.items():
        order = ev.removal_order(rel, cand, most_relevant_first=True)
        lerf = ev.removal_order(rel, cand, most_relevant_first=False)
        for j, k in enumerate(ev.removal_counts(len(cand), 5)):
            logit, prob = _one_forward_each(model, ids, position, set(order[:k]), strategy, 7)
            assert many[key].morf_logit[j] == pytest.approx(logit, abs=1e-10)
            assert many[key].morf_prob[j] == pytest.approx(prob, abs=1e-12)
            logit, _ = _one_forward_each(model, ids, position, set(lerf[:k]), strategy, 7)
            assert many[key].lerf_logit[j] == pytest.approx(logit, abs=1e-10)
        # pooled = one at a time
        alone = perturbation_curves(
            model, ids, position, rel, candidates=cand, strategy=strategy, steps=5, neutral_id=7
        )
        for field in ("morf_logit", "lerf_logit", "insertion_prob", "comprehensiveness_k", "sufficiency_k"):
            np.testing.assert_allclose(getattr(many[key], field), getattr(alone, field), rtol=0, atol=1e-10)
    # the same without the cache: every row from position 0 (the fixed head of 6 tokens is never removed,
    # so every cached row skips at least those)
    monkeypatch.setattr(ev, "_plain_keys_values", lambda cache: None)
    full, handle = _tokens_through_first_block(model)
    try:
        again = perturbation_curves_many(
            model, ids, position, rels, candidates=cand, strategy=strategy, steps=5, neutral_id=7, batch_size=4
        )
    finally:
        handle.remove()
    for key in rels:
        np.testing.assert_allclose(many[key].morf_logit, again[key].morf_logit, rtol=0, atol=1e-10)
    rows = full[0] // position
    assert full[0] == rows * position
    # cached: the unperturbed run, the check row, then every other row without its first 6 positions at least
    assert seen[0] <= position + (position - 6) * rows


def test_models_without_a_plain_cache_run_every_position():
    """Gemma-2 keeps a sliding-window cache: the full-length path, same numbers as one forward each."""
    model = tiny_causal_lm("gemma2", vocab=61, dtype=torch.float64)
    ids = random_ids(12, seed=2)
    position = 11
    rel = np.random.default_rng(1).normal(size=position)
    seen, handle = _tokens_through_first_block(model)
    try:
        c = perturbation_curves(model, ids, position, rel, candidates=list(range(1, position)), steps=3)
    finally:
        handle.remove()
    order = ev.removal_order(rel, list(range(1, position)), most_relevant_first=True)
    for j, k in enumerate(ev.removal_counts(position - 1, 3)):
        assert c.morf_logit[j] == pytest.approx(
            _one_forward_each(model, ids, position, set(order[:k]), "zero", 7)[0], abs=1e-10
        )
    assert seen[0] % position == 0  # whole rows only


def test_a_cache_that_does_not_reproduce_the_model_is_not_used(monkeypatch):
    model = tiny_causal_lm("llama", vocab=61, dtype=torch.float64)
    ids = random_ids(12, seed=4)
    position = 11
    rel = np.random.default_rng(3).normal(size=position)
    real = ev._suffix_logits

    def off(*args, **kwargs):
        return real(*args, **kwargs) + 1.0  # a position handling gone wrong

    monkeypatch.setattr(ev, "_suffix_logits", off)
    c = perturbation_curves(model, ids, position, rel, steps=3)
    order = ev.removal_order(rel, list(range(position)), most_relevant_first=True)
    for j, k in enumerate(ev.removal_counts(position, 3)):
        assert c.morf_logit[j] == pytest.approx(
            _one_forward_each(model, ids, position, set(order[:k]), "zero", 7)[0], abs=1e-10
        )
