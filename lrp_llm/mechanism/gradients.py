"""Relevance of several input tensors at once, for every method, given a scoring function.

The encoder-decoder (source and decoder embeddings) and image (pixels) explanations
share this: the caller installs the rules (:func:`lrp_llm.mechanism.context.lrp_rules`) and
passes ``score(inputs) -> (batch, n_targets)``; here the inputs get gradients, one
backward pass runs per target through one forward graph, and each input's relevance
is ``x * grad`` summed over its feature axis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lrp_llm.errors import InputError, ShouldCancel, check_cancel

METHODS: tuple[str, ...] = ("attnlrp", "cp-lrp", "grad-x-input", "saliency", "integrated-gradients", "random")
RULES: dict[str, str | None] = {
    "attnlrp": "attnlrp",
    "cp-lrp": "cp-lrp",
    "grad-x-input": None,
    "saliency": None,
    "integrated-gradients": None,
    "random": None,
}

Score = Callable[[list[torch.Tensor]], torch.Tensor]
Progress = Callable[[int, int], None]


def check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")


def input_relevance(
    score: Score,
    inputs: Sequence[torch.Tensor],
    feature_dims: Sequence[int],
    *,
    method: str,
    steps: int = 32,
    ig_batch: int = 8,
    seed: int = 0,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Relevance of each input for each target score.

    ``inputs``: tensors with a leading batch dimension of 1 (e.g. embeddings (1, seq, d),
    pixels (1, C, H, W)); ``feature_dims[i]``: the axis of ``inputs[i]`` summed over
    (-1 for embeddings, 1 for channels). Returns one tensor per input of shape
    (n_targets, *input shape without batch and feature axis), in float64 for float64
    inputs else float32, on the CPU; and the target scores (n_targets,) at the input.
    """
    check_method(method)
    acc = torch.float64 if inputs[0].dtype == torch.float64 else torch.float32
    base = [x.detach() for x in inputs]
    dims = [d if d >= 0 else x.dim() + d for d, x in zip(feature_dims, base)]
    if method == "integrated-gradients":
        return _integrated_gradients(score, base, dims, acc, steps, ig_batch, progress, should_cancel)
    with torch.enable_grad():
        xs = [x.clone().requires_grad_(True) for x in base]
        scores = score(xs)[0]  # (n,)
        n = scores.shape[0]
        values = scores.detach().to(acc).cpu()
        if method == "random":
            gen = torch.Generator().manual_seed(seed)
            out = [torch.rand(n, *_reduced(x, d), generator=gen, dtype=acc) * 2 - 1 for x, d in zip(base, dims)]
            if progress is not None:
                progress(n, n)
            return out, values
        out = [torch.zeros(n, *_reduced(x, d), dtype=acc) for x, d in zip(base, dims)]
        for i in range(n):
            check_cancel(should_cancel)
            grads = torch.autograd.grad(scores[i], xs, retain_graph=i < n - 1, allow_unused=True)
            for k, (x, g, d) in enumerate(zip(xs, grads, dims)):
                if g is None:
                    continue
                g = g[0].to(acc)
                if method == "saliency":
                    out[k][i] = g.norm(dim=d - 1).cpu()
                else:
                    out[k][i] = (x[0].detach().to(acc) * g).sum(d - 1).cpu()
            if progress is not None:
                progress(i + 1, n)
        return out, values


def _reduced(x: torch.Tensor, dim: int) -> tuple[int, ...]:
    shape = list(x.shape[1:])
    del shape[dim - 1]
    return tuple(shape)


def _integrated_gradients(score, base, dims, acc, steps, ig_batch, progress, should_cancel):
    """Mean gradient along the straight path from zero (midpoint rule), times the input."""
    steps = max(1, int(steps))
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    with torch.no_grad():
        values = score(list(base))[0].to(acc).cpu()
    n = values.shape[0]
    grads = [torch.zeros(n, *x.shape[1:], dtype=acc, device=x.device) for x in base]
    done = 0
    for start in range(0, steps, ig_batch):
        chunk = alphas[start : start + ig_batch]
        with torch.enable_grad():
            xs = []
            for x in base:
                a = chunk.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
                xs.append((a * x).detach().requires_grad_(True))
            scores = score(xs).sum(0)  # (n,)
            for i in range(n):
                check_cancel(should_cancel)
                gs = torch.autograd.grad(scores[i], xs, retain_graph=i < n - 1, allow_unused=True)
                for k, g in enumerate(gs):
                    if g is not None:
                        grads[k][i] += g.to(acc).sum(0)
                done += len(chunk)
                if progress is not None:
                    progress(done, steps * n)
    out = [(x[0].to(acc) * (g / steps)).sum(d).cpu() for x, g, d in zip(base, grads, dims)]
    return out, values
