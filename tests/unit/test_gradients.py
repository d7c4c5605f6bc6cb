"""The gradient engine against hand-written gradients of small functions (float64, exact up to rounding)."""

from __future__ import annotations

import pytest
import torch

from lrp_llm.errors import Cancelled, InputError
from lrp_llm.mechanism.gradients import batch_relevance, input_relevance
from tests.support.models import cancel_after

GEN = torch.Generator().manual_seed(0)
W = torch.randn(3, 4, generator=GEN, dtype=torch.float64)  # (features, targets)


def tanh_score(xs):
    """x (b, seq, 3) -> scores (b, 4): target j is sum_p tanh(x[p] . W[:, j])."""
    return torch.tanh(xs[0] @ W).sum(1)


def tanh_gxi(x):
    """Gradient x input of :func:`tanh_score` for x (seq, 3): (4, seq)."""
    h = torch.tanh(x @ W)  # (seq, 4)
    grad = (1 - h**2).T[:, :, None] * W.T[:, None, :]  # (4, seq, 3)
    return grad, (x[None] * grad).sum(-1)


@pytest.mark.parametrize("backward_batch", [1, 3, 8])
def test_grad_x_input_and_saliency_match_the_written_gradient(backward_batch):
    x = torch.randn(1, 5, 3, generator=GEN, dtype=torch.float64)
    grad, want = tanh_gxi(x[0])
    (rel,), values = input_relevance(tanh_score, [x], [-1], method="grad-x-input", backward_batch=backward_batch)
    assert rel.shape == (4, 5) and rel.dtype == torch.float64
    torch.testing.assert_close(rel, want)
    torch.testing.assert_close(values, tanh_score([x])[0])
    (sal,), _ = input_relevance(tanh_score, [x], [-1], method="saliency", backward_batch=backward_batch)
    torch.testing.assert_close(sal, grad.norm(dim=-1))


def test_rule_set_names_are_gradient_x_input_here():
    """Without installed rules an LRP method is plain gradient x input (the rules live in the model)."""
    x = torch.randn(1, 5, 3, generator=GEN, dtype=torch.float64)
    (rel,), _ = input_relevance(tanh_score, [x], [-1], method="attnlrp")
    torch.testing.assert_close(rel, tanh_gxi(x[0])[1])


@pytest.mark.parametrize("steps,ig_batch", [(1, 8), (4, 3), (7, 8)])
def test_integrated_gradients_is_exact_for_a_quadratic(steps, ig_batch):
    """f(x) = (x . w)^2: the gradient is linear on the path, so the midpoint rule is exact:
    IG_i = x_i * w_i * (x . w), and the relevance adds up to f(x) - f(0)."""
    w = torch.randn(2, 6, generator=GEN, dtype=torch.float64)  # two targets
    x = torch.randn(1, 6, generator=GEN, dtype=torch.float64)

    def score(xs):
        return (xs[0] @ w.T) ** 2  # (b, 2)

    progress = []
    (rel,), values = input_relevance(
        score,
        [x],
        [-1],
        method="integrated-gradients",
        steps=steps,
        ig_batch=ig_batch,
        progress=lambda *a: progress.append(a),
    )
    dot = x[0] @ w.T  # (2,)
    torch.testing.assert_close(rel, (x[0] * w * dot[:, None]).sum(-1))  # summed over the feature axis
    torch.testing.assert_close(rel, values)  # completeness: f(0) = 0
    assert progress[0] == (0, 2 * steps) and progress[-1] == (2 * steps, 2 * steps)


def test_several_inputs_and_an_unused_one():
    a = torch.randn(1, 4, 3, generator=GEN, dtype=torch.float64)
    b = torch.randn(1, 2, 3, generator=GEN, dtype=torch.float64)
    unused = torch.randn(1, 3, 3, generator=GEN, dtype=torch.float64)

    def score(xs):
        return tanh_score([xs[0]]) + tanh_score([xs[1]])

    (ra, rb, ru), _ = input_relevance(score, [a, b, unused], [-1, -1, -1], method="grad-x-input")
    torch.testing.assert_close(ra, tanh_gxi(a[0])[1])
    torch.testing.assert_close(rb, tanh_gxi(b[0])[1])
    assert ru.shape == (4, 3) and not ru.any()


def test_random_baseline_is_seeded_uniform():
    x = torch.randn(1, 5, 3, generator=GEN)

    def score(xs):
        return tanh_score([xs[0].double()])

    (r1,), _ = input_relevance(score, [x], [-1], method="random")
    (r2,), _ = input_relevance(score, [x], [-1], method="random", seed=0)
    (r3,), _ = input_relevance(score, [x], [-1], method="random", seed=1)
    assert r1.shape == (4, 5) and r1.dtype == torch.float32
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)
    assert r1.min() >= -1 and r1.max() < 1


def test_a_batch_of_independent_examples_matches_one_by_one():
    x = torch.randn(3, 5, 3, generator=GEN, dtype=torch.float64)
    for method in ("grad-x-input", "saliency"):
        (rel,) = batch_relevance(tanh_score, [x], [-1], method=method, backward_batch=3)
        assert rel.shape == (3, 4, 5)
        for i in range(3):
            (one,), _ = input_relevance(tanh_score, [x[i : i + 1]], [-1], method=method)
            torch.testing.assert_close(rel[i], one)
    with pytest.raises(InputError, match="not 'integrated-gradients'"):
        batch_relevance(tanh_score, [x], [-1], method="integrated-gradients")


def test_cancellation_and_non_gradient_methods():
    x = torch.randn(1, 5, 3, generator=GEN, dtype=torch.float64)
    with pytest.raises(Cancelled):
        input_relevance(tanh_score, [x], [-1], method="grad-x-input", backward_batch=1, should_cancel=cancel_after(2))
    for method in ("hidden-attention", "bilrp"):
        with pytest.raises(InputError, match="not a gradient method"):
            input_relevance(tanh_score, [x], [-1], method=method)
    with pytest.raises(InputError, match="unknown method 'lime'"):
        input_relevance(tanh_score, [x], [-1], method="lime")
