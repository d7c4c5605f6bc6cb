"""The gradient engine: relevance of input tensors for target scores, for every gradient-based method.

Every engine (causal LMs, encoder-decoders, images, the synthetic tasks) describes its
model as ``score(inputs) -> (batch, n_targets)``; here the inputs get gradients, the
backward passes run through one forward graph, and each input's relevance is
``x * grad`` summed over its feature axis. The LRP rule sets are gradient x input under
installed rules (:func:`method_rules`); saliency is the gradient's norm; integrated
gradients averages the gradient along the straight path from zero (midpoint rule);
the random baseline draws uniform noise in [-1, 1).

Up to ``backward_batch`` targets share one backward pass (a batch of one-hot
cotangents, ``is_grads_batched``); an op without a batching rule, or checkpointed
blocks, fall back to one backward pass per target. A caller that shows results as they
come (``on_rows``) gets the first target from a backward pass of its own, so its
relevance is ready after one forward and one backward pass.

Intermediate tensors ("taps", :class:`Taps`) that the forward registers get their
gradients from the same ``torch.autograd.grad`` calls as the inputs (component
relevance: ``h * dtarget/dh``, no extra backward pass); :func:`propagate` runs a batch of
given cotangents from a tap back to the inputs (conditional heatmaps, CRP).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from lrp_llm.errors import InputError, ShouldCancel, UnsupportedModelError, check_cancel
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.mechanism.patch import ModelPatch, freeze_parameters
from lrp_llm.methods import get_method

# The taps' gradients of one backward chunk (targets x every tapped tensor) stay under this many bytes:
# fewer targets share a backward pass when the tapped tensors are large (long inputs, wide MLPs).
TAP_BUDGET_BYTES = 1 << 30

# score(inputs) -> (batch, n_targets): the target scores of each example (or IG step) of the batch
Score = Callable[[list[torch.Tensor]], torch.Tensor]
Progress = Callable[[int, int], None]
# on_rows(first, rows): targets first .. first + b - 1 are done; rows[i] (b, ...) per input
OnRows = Callable[[int, list[torch.Tensor]], None]


class Taps:
    """Intermediate tensors of one forward pass whose gradients come with the inputs'.

    The forward (``score``) calls :meth:`add` with each tensor (a node of the graph, e.g.
    a block output); :func:`input_relevance` adds them to the inputs of every backward
    pass and hands their gradients to :meth:`done`, chunk by chunk, before ``on_rows``.
    Subclasses reduce each chunk at once (nothing of shape targets x tensor is kept).
    ``retain_graph``: keep the graph after the last backward pass (:meth:`done` then may
    run :func:`propagate` through it).
    """

    retain_graph = False

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] = []
        self._versions: list[int] = []

    def add(self, tensor: torch.Tensor) -> None:
        self.tensors.append(tensor)
        self._versions.append(tensor._version)

    def check_unchanged(self) -> None:
        """A one-line error if the forward changed a tapped tensor in place after it was tapped (its gradient
        and value would then be another tensor's)."""
        for t, v in zip(self.tensors, self._versions):
            if t._version != v:
                raise UnsupportedModelError(
                    "the model changes a component's tensor in place after it is computed; "
                    "component relevance is not available for this architecture"
                )

    @contextmanager
    def installed(self, model: nn.Module) -> Iterator[Taps]:
        """Place the taps on ``model`` for one ``with`` block (hooks that call :meth:`add`); the base places none."""
        yield self

    def done(
        self, first: int, grads: Sequence[torch.Tensor | None], inputs: Sequence[torch.Tensor]
    ) -> None:  # pragma: no cover - the base records nothing
        """Targets ``first`` .. ``first + b - 1``: ``grads[k]`` (b, *tensors[k].shape) or None (not reached)."""


@contextmanager
def method_rules(model: nn.Module, method: str, *, checkpoint: bool = False) -> Iterator[ModelPatch]:
    """Install ``method``'s rule set (none for the plain-gradient methods) with parameters frozen, for one block."""
    with lrp_rules(model, get_method(method).rules, checkpoint=checkpoint) as patch:
        freeze_parameters(model, patch)
        yield patch


def input_relevance(
    score: Score,
    inputs: Sequence[torch.Tensor],
    feature_dims: Sequence[int],
    *,
    method: str,
    steps: int = 32,
    ig_batch: int = 8,
    backward_batch: int = 8,
    checkpoint: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
    timings: dict[str, float] | None = None,
    on_rows: OnRows | None = None,
    taps: Taps | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Relevance of each input of one example for each of its target scores.

    ``inputs``: tensors with a leading batch dimension of 1 (e.g. embeddings (1, seq, d),
    pixels (1, C, H, W)); ``feature_dims[i]``: the axis of ``inputs[i]`` summed over
    (-1 for embeddings, 1 for channels); ``score`` returns (1, n_targets) (integrated
    gradients: (n_alphas, n_targets) for a batch of scaled inputs). Returns one tensor per
    input of shape (n_targets, *input shape without batch and feature axis), in float64
    for float64 inputs else float32, on the CPU; and the target scores (n_targets,) at
    the input. ``checkpoint``: the blocks recompute their activations (one target per
    backward pass). ``timings`` gets "forward" and "backward" (integrated gradients:
    "forward_backward") in seconds. ``on_rows(first, rows)`` is called as targets are done,
    in order, with the finished rows of every input (the rows of the returned tensors);
    integrated gradients and the random baseline finish every target at once.
    ``taps``: intermediate tensors the forward registers (:class:`Taps`); their gradients come
    from the same backward passes, for gradient x input computations only (the LRP rule sets
    and grad-x-input; others are a one-line error); fewer targets share a backward pass where
    their gradients would exceed ``TAP_BUDGET_BYTES``.
    """
    computation = _gradient_computation(method)
    if taps is not None and computation != "gradient-x-input":
        raise InputError(
            f"component relevance needs a gradient x input method (an LRP rule set or grad-x-input), not '{method}'"
        )
    acc = torch.float64 if inputs[0].dtype == torch.float64 else torch.float32
    base = [x.detach() for x in inputs]
    dims = [d if d >= 0 else x.dim() + d for d, x in zip(feature_dims, base)]
    batch = 1 if checkpoint else max(1, int(backward_batch))
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    if computation == "integrated-gradients":
        out, values = _integrated_gradients(score, base, dims, acc, steps, ig_batch, batch, progress, should_cancel)
        timings["forward_backward"] = time.perf_counter() - t0
        if on_rows is not None:
            on_rows(0, out)
        return out, values
    with torch.enable_grad():
        xs = [x.clone().requires_grad_(True) for x in base]
        scores = score(xs)[0]  # (n,)
        n = scores.shape[0]
        values = scores.detach().to(acc).cpu()
        timings["forward"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        if computation == "random":
            gen = torch.Generator().manual_seed(seed)
            out = [torch.rand(n, *_reduced(x, d), generator=gen, dtype=acc) * 2 - 1 for x, d in zip(base, dims)]
            if on_rows is not None:
                on_rows(0, out)
            if progress is not None:
                progress(n, n)
        else:
            out = [torch.zeros(n, *_reduced(x, d), dtype=acc) for x, d in zip(base, dims)]
            if progress is not None:
                progress(0, n)  # the forward pass is done; backward passes follow
            tapped = [] if taps is None else list(taps.tensors)
            if taps is not None:
                taps.check_unchanged()
            if tapped:  # the taps' gradients of one chunk exist together: keep them within TAP_BUDGET_BYTES
                per_target = sum(t.numel() * t.element_size() for t in tapped)
                batch = max(1, min(batch, TAP_BUDGET_BYTES // max(1, per_target)))
            first = 1 if on_rows is not None else batch
            keep = taps is not None and taps.retain_graph
            for i, b, grads in _target_gradients(scores, [*xs, *tapped], batch, should_cancel, first=first, keep=keep):
                if taps is not None:
                    taps.done(i, grads[len(xs) :], xs)
                for k, (x, g, d) in enumerate(zip(base, grads, dims)):
                    if g is not None:  # an input the targets do not depend on keeps zero relevance
                        out[k][i : i + b] = _reduce(computation, x[0], g[:, 0], d, acc)
                if on_rows is not None:
                    on_rows(i, [o[i : i + b] for o in out])
                if progress is not None:
                    progress(i + b, n)
        timings["backward"] = time.perf_counter() - t1
    return out, values


def batch_relevance(
    score: Score,
    inputs: Sequence[torch.Tensor],
    feature_dims: Sequence[int],
    *,
    method: str,
    backward_batch: int = 8,
    should_cancel: ShouldCancel | None = None,
) -> list[torch.Tensor]:
    """Relevance for a batch of independent examples (evaluation over a data set).

    ``inputs``: tensors (batch, ...); ``score`` returns (batch, n_targets), row ``b``
    depending on example ``b`` only. Examples do not interact, so one backward pass of
    the ``j``-th target summed over the batch gives every example its own relevance.
    Returns per input (batch, n_targets, *input shape without batch and feature axis) on
    the CPU. Gradient x input (under any rule set) and saliency only.
    """
    computation = _gradient_computation(method)
    if not get_method(method).batchable:
        raise InputError(f"batched relevance supports the LRP rule sets, grad-x-input and saliency, not '{method}'")
    acc = torch.float64 if inputs[0].dtype == torch.float64 else torch.float32
    dims = [d if d >= 0 else x.dim() + d for d, x in zip(feature_dims, inputs)]
    with torch.enable_grad():
        xs = [x.detach().clone().requires_grad_(True) for x in inputs]
        scores = score(xs)  # (batch, n)
        n = scores.shape[-1]
        out = [torch.zeros(x.shape[0], n, *_reduced(x, d), dtype=acc) for x, d in zip(xs, dims)]
        for i, b, grads in _target_gradients(scores, xs, max(1, int(backward_batch)), should_cancel):
            for k, (x, g, d) in enumerate(zip(xs, grads, dims)):
                if g is not None:
                    # g: (b, batch, ...) for targets i .. i + b - 1 -> (batch, b, ...)
                    out[k][:, i : i + b] = _reduce(computation, x.detach(), g, d + 1, acc).transpose(0, 1)
    return out


def _gradient_computation(method: str) -> str:
    """What the engine computes for ``method`` (the table's ``computation``); methods with their own are refused."""
    computation = get_method(method).computation
    if computation == "own":
        raise InputError(f"'{method}' is not a gradient method")
    return computation


def _reduce(computation: str, x: torch.Tensor, grad: torch.Tensor, dim: int, acc: torch.dtype) -> torch.Tensor:
    """``grad`` (b, *x.shape) -> relevance: ``grad`` without its axis ``dim``, on the CPU."""
    if computation == "gradient-norm":
        return grad.to(acc).norm(dim=dim).cpu()
    return (x.to(acc) * grad.to(acc)).sum(dim).cpu()


def _reduced(x: torch.Tensor, dim: int) -> tuple[int, ...]:
    shape = list(x.shape[1:])
    del shape[dim - 1]
    return tuple(shape)


def _target_gradients(
    scores: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    batch: int,
    should_cancel: ShouldCancel | None,
    *,
    first: int | None = None,
    keep: bool = False,
) -> Iterator[tuple[int, int, tuple[torch.Tensor | None, ...]]]:
    """Yield ``(first_target, b, grads)``: per input, grads (b, *input.shape) of targets first .. first + b - 1.

    ``scores``: (..., n); target ``j`` is ``scores[..., j]`` summed over the leading axes.
    Up to ``batch`` targets share one backward pass (a batch of one-hot cotangents,
    ``is_grads_batched``); the graph is kept until the last target. Falls back to one
    backward per target where batching is not possible (an op without a batching rule).
    ``first``: the size of the first group (1: the first target is ready after one
    backward pass); default ``batch``. An input the targets do not reach gets None.
    ``keep``: keep the graph after the last target too.
    """
    n = scores.shape[-1]
    i = 0
    while i < n:
        check_cancel(should_cancel)
        b = min(batch if i or first is None else max(1, first), n - i)
        last = i + b >= n
        if b > 1:
            cotangents = torch.zeros(b, *scores.shape, dtype=scores.dtype, device=scores.device)
            cotangents.view(b, -1, n)[torch.arange(b), :, torch.arange(i, i + b)] = 1
            try:
                # the graph is kept even after the last chunk so that a fallback can still run;
                # it is freed when the caller drops its references
                grads = torch.autograd.grad(
                    scores, inputs, grad_outputs=cotangents, is_grads_batched=True, retain_graph=True, allow_unused=True
                )
            except RuntimeError:
                batch, first = 1, None  # an op without a batching rule: one target at a time
                continue
            yield i, b, grads
        else:
            target = scores[..., i]
            grads = torch.autograd.grad(
                target if target.dim() == 0 else target.sum(), inputs, retain_graph=keep or not last, allow_unused=True
            )
            yield i, 1, tuple(None if g is None else g.unsqueeze(0) for g in grads)
        i += b


def propagate(
    output: torch.Tensor | Sequence[torch.Tensor],
    inputs: Sequence[torch.Tensor],
    cotangents: torch.Tensor | Sequence[torch.Tensor],
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of ``inputs`` for a batch of cotangents on ``output``: per input (m, *input.shape).

    ``cotangents``: (m, *output.shape); one backward pass (``is_grads_batched``), or one per
    cotangent where an op has no batching rule. Several tensors (the weighted contributions of a
    MoE block's experts) take a sequence of outputs and one batch of cotangents each, all with
    the same m. The graph is kept (the caller's graph may serve more). Under installed rules this
    propagates relevance-gradients by the same rules.
    """
    outputs = [output] if isinstance(output, torch.Tensor) else list(output)
    cots = [cotangents] if isinstance(cotangents, torch.Tensor) else list(cotangents)
    m = cots[0].shape[0]
    if m > 1:
        try:
            return torch.autograd.grad(
                outputs, inputs, grad_outputs=cots, is_grads_batched=True, retain_graph=True, allow_unused=True
            )
        except RuntimeError:
            pass  # an op without a batching rule: one cotangent at a time
    rows = [
        torch.autograd.grad(outputs, inputs, grad_outputs=[c[j] for c in cots], retain_graph=True, allow_unused=True)
        for j in range(m)
    ]
    return tuple(None if rows[0][k] is None else torch.stack([row[k] for row in rows]) for k in range(len(inputs)))


def _integrated_gradients(score, base, dims, acc, steps, ig_batch, backward_batch, progress, should_cancel):
    """Mean gradient along the straight path from zero (midpoint rule), times the input."""
    steps = max(1, int(steps))
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    # The real input is scored once more (alpha = 1) for the values it reports.
    with torch.no_grad():
        values = score(list(base))[0].to(acc).cpu()
    n = values.shape[0]
    grads = [torch.zeros(n, *x.shape[1:], dtype=acc, device=x.device) for x in base]
    done, total = 0, steps * n
    if progress is not None:
        progress(0, total)
    for start in range(0, steps, ig_batch):
        chunk = alphas[start : start + ig_batch]
        with torch.enable_grad():
            xs = []
            for x in base:
                a = chunk.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
                xs.append((a * x).detach().requires_grad_(True))
            scores = score(xs).sum(0)  # (n,)
            for i, b, gs in _target_gradients(scores, xs, backward_batch, should_cancel):
                for k, g in enumerate(gs):
                    if g is not None:
                        grads[k][i : i + b] += g.to(acc).sum(1)  # g: (b, alphas, ...)
                done += len(chunk) * b
                if progress is not None:
                    progress(done, total)
    out = [(x[0].to(acc) * (g / steps)).sum(d).cpu() for x, g, d in zip(base, grads, dims)]
    return out, values


__all__ = ["OnRows", "Progress", "Score", "Taps", "batch_relevance", "input_relevance", "method_rules", "propagate"]
