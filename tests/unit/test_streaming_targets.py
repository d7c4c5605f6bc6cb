"""``explain(..., on_target=...)``: each answer token's explanation as soon as its backward pass ends.

What is streamed equals what is returned; the first target arrives after one forward pass and
one backward pass (so the app can colour the first answer token while the rest are computed).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrp_llm.engines.explain import explain
from tests.support.models import random_ids, tiny_causal_lm, tiny_tokenizer
from tests.support.tiny_t5_vit import tiny_t5

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = ["attnlrp", "cp-lrp", "grad-x-input", "saliency", "integrated-gradients", "random"]


def _same(streamed, targets):
    assert [i for i, _ in streamed] == list(range(len(targets)))
    for (_, s), t in zip(streamed, targets):
        assert (s.position, s.token, s.id) == (t.position, t.token, t.id)
        assert s.logit == t.logit and s.probability == t.probability and s.relevance_sum == t.relevance_sum
        np.testing.assert_array_equal(s.relevance, t.relevance)
        if t.source_relevance is not None:
            np.testing.assert_array_equal(s.source_relevance, t.source_relevance)


@pytest.mark.parametrize("method", METHODS)
def test_causal_lm_streams_every_target_in_order(method):
    model, tok = tiny_causal_lm(), tiny_tokenizer()
    streamed = []
    a = explain(
        model,
        tok,
        prompt_ids=random_ids(7),
        answer_ids=random_ids(11, seed=2),
        method=method,
        steps=4,
        on_target=lambda i, t: streamed.append((i, t)),
    )
    _same(streamed, a.targets)
    plain = explain(model, tok, prompt_ids=random_ids(7), answer_ids=random_ids(11, seed=2), method=method, steps=4)
    for s, t in zip(a.targets, plain.targets):  # streaming changes no number beyond float32 rounding
        np.testing.assert_allclose(s.relevance, t.relevance, rtol=1e-5, atol=1e-6 * np.abs(t.relevance).max())


@pytest.mark.parametrize("method", ["attnlrp", "random"])
def test_seq2seq_streams_every_target_in_order(method):
    tok = tiny_tokenizer()
    model = tiny_t5(vocab=len(tok))
    streamed = []
    a = explain(model, tok, "copy d e f", target="d e f", method=method, on_target=lambda i, t: streamed.append((i, t)))
    _same(streamed, a.targets)


def test_the_first_target_comes_after_one_forward_and_one_backward(monkeypatch):
    model, tok = tiny_causal_lm(), tiny_tokenizer()
    forwards, backwards = [], []  # backwards: one entry per backward pass, True when it serves a batch of targets
    at_first = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    grad = torch.autograd.grad

    def counted(*args, **kwargs):
        backwards.append(bool(kwargs.get("is_grads_batched")))
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counted)

    def on_target(i, t):
        if i == 0:
            at_first.append((len(forwards), list(backwards)))

    a = explain(model, tok, prompt_ids=random_ids(6), answer_ids=random_ids(20, seed=3), on_target=on_target)
    assert at_first == [(1, [False])]  # one forward, one backward of the first target alone
    assert True in backwards and len(backwards) < len(a.targets)  # the others share batched backward passes


class _NoBatching(torch.autograd.Function):
    """x * 2 with a backward that vmap cannot batch (aten::alias has no batching rule, as in transformers' Mamba-2
    scan): the engine falls back to one target at a time."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return torch.ops.aten.alias(grad * 2)


@pytest.mark.parametrize("streaming", [False, True])
def test_an_op_without_a_batching_rule_falls_back_to_one_target_at_a_time(monkeypatch, streaming):
    from lrp_llm.mechanism.gradients import input_relevance

    calls = []
    grad = torch.autograd.grad

    def counted(*args, **kwargs):
        calls.append(bool(kwargs.get("is_grads_batched")))
        assert len(calls) < 50, "the fallback retried the batched backward pass without end"
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counted)
    x = torch.randn(1, 5, 3, dtype=torch.float64)
    weights = torch.randn(3, 4, dtype=torch.float64)

    def score(xs):
        return (_NoBatching.apply(xs[0]) @ weights).sum(1)  # (1, 4): target j = sum over tokens of 2 x w_j

    rows: list[int] = []
    (rel,), _ = input_relevance(
        score, [x], [-1], method="grad-x-input", on_rows=(lambda i, r: rows.append(i)) if streaming else None
    )
    want = (2 * x[0] @ weights).T  # relevance of token t for target j: x_t . (2 w_j)
    torch.testing.assert_close(rel, want, rtol=1e-12, atol=1e-12)
    assert calls.count(True) == 1  # one batched try, then one target at a time
    assert not streaming or rows == [0, 1, 2, 3]  # the first alone, then the others one by one
