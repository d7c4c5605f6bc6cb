"""Explain one target or every generated token of a causal language model.

One forward pass over prompt + answer under the method's rules, logits computed only at
the explained positions, then backward passes (8 targets at a time) through the same
graph. Relevance of token ``j`` for target ``t`` is ``sum_d e[j, d] * grad[j, d]`` where
``e`` is the (scaled) input embedding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from lrp_llm.archs import check_not_encoder
from lrp_llm.engines.finite import check_finite
from lrp_llm.engines.generation import (
    AnswerExplanation,
    OnTarget,
    TargetStream,
    build_prompt,
    context_length,
    input_device,
    token_strings,
    too_long,
)
from lrp_llm.engines.hidden_attention import hidden_attention
from lrp_llm.errors import InputError, ShouldCancel
from lrp_llm.mechanism.components import ComponentRecorder, ComponentSpec
from lrp_llm.mechanism.gradients import Progress, Taps, input_relevance, method_rules
from lrp_llm.methods import check_offered, default_method, get_method
from lrp_llm.results.attribution import TargetRelevance

# on_rows(first, relevance (b, seq), logits (b,), probabilities (b,)): targets first .. first + b - 1 are done
OnTargetRows = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]

# Inputs longer than this recompute block activations in the backward pass.
CHECKPOINT_ABOVE_TOKENS = 4096


def relevance(
    model: nn.Module,
    input_ids: Sequence[int],
    positions: Sequence[int],
    *,
    method: str | None = None,
    steps: int = 32,
    ig_batch: int = 8,
    backward_batch: int = 8,
    seed: int = 0,
    checkpoint: bool | None = None,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
    on_rows: OnTargetRows | None = None,
    components: bool | ComponentSpec | Taps = False,
) -> dict[str, object]:
    """Relevance of every token for the token at each of ``positions``.

    Returns ``relevance`` (n_targets, seq) float32 (zero from each position on),
    ``logits`` (n_targets,), ``probabilities`` (n_targets,) and ``timings``; for a rule set that
    holds relevance apart (attnlrp-sink) also ``held_apart`` (n_targets,).
    The target at position ``p`` is ``input_ids[p]``, predicted from position ``p - 1``.
    ``method=None`` is the model family's default (AttnLRP; MambaLRP for Mamba).
    ``on_rows(first, relevance, logits, probabilities)``: targets ``first`` .. are done
    (rows of the returned tensors, in order), called as the backward passes finish.
    ``components`` (True or a :class:`~lrp_llm.mechanism.components.ComponentSpec`): also
    ``components``, one :class:`~lrp_llm.results.components.ComponentRelevance` per target, from
    the same backward passes (gradient x input methods only). :class:`~lrp_llm.mechanism.gradients.Taps`
    instead (a :class:`~lrp_llm.mechanism.components.ComponentRecorder`, the conditional heatmaps'
    taps): installed for the forward pass and given their gradients; the caller reads them.
    """
    check_not_encoder(model)
    method = default_method(model) if method is None else method
    get_method(method, "causal-lm")
    positions = [int(p) for p in positions]
    if not positions:
        raise InputError("nothing to explain: no target tokens")
    if min(positions) < 1 or max(positions) >= len(input_ids):
        raise InputError("target positions must lie inside the sequence, after its first token")
    check_offered(model, method)
    device = input_device(model)
    ids = torch.tensor([list(input_ids)], device=device)
    seq = ids.shape[1]
    n = len(positions)
    recorder = _recorder(model, method, components, n, seq, checkpoint)
    if recorder is not None:
        checkpoint = False  # recomputed blocks would tap their tensors again
    keep = torch.tensor([p - 1 for p in positions], device=device)
    target_ids = torch.tensor([int(input_ids[p]) for p in positions], device=device)
    rows = torch.arange(n, device=device)
    if checkpoint is None:
        checkpoint = seq > CHECKPOINT_ABOVE_TOKENS
    timings: dict[str, float] = {}
    # float64 models keep float64 relevance (exact conservation checks); others float32.
    acc = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
    cpu_rows, cpu_targets = rows.cpu(), target_ids.cpu()

    def pick(all_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, vocab) logits at the kept positions -> the targets' logits and probabilities (n,), on the CPU."""
        all_logits = all_logits.to(acc).cpu()
        return all_logits[cpu_rows, cpu_targets], torch.softmax(all_logits, dim=-1)[cpu_rows, cpu_targets]

    held_apart: torch.Tensor | None = None  # the relevance a rule set holds apart (attnlrp-sink), per target
    if method == "hidden-attention":
        t0 = time.perf_counter()
        all_logits, rel = hidden_attention(model, ids, keep, progress=progress, should_cancel=should_cancel)
        timings["forward_backward"] = time.perf_counter() - t0
        rel = rel.to(acc)
        target_logits, probs = pick(all_logits)
    else:
        seen: list[torch.Tensor] = []
        picked: list[tuple[torch.Tensor, torch.Tensor]] = []  # pick(the logits at the input), once
        sink = None

        def score(xs: list[torch.Tensor]) -> torch.Tensor:
            if sink is not None:
                sink.leaf = xs[1]  # the relevance held apart collects in this input's gradient
            all_logits = model(inputs_embeds=xs[0], use_cache=False, logits_to_keep=keep).logits  # (b, n, vocab)
            if not seen:  # the first scoring is at the input itself (IG scores it before the path)
                seen.append(all_logits[0].detach())
            return all_logits[:, rows, target_ids]

        def scores_at_input() -> tuple[torch.Tensor, torch.Tensor]:
            if not picked:
                picked.append(pick(seen[0]))
            return picked[0]

        def rows_done(first: int, done: list[torch.Tensor]) -> None:
            rel_rows = done[0]
            b = rel_rows.shape[0]
            logits, probabilities = scores_at_input()
            rel_rows = rel_rows.clone()
            for j in range(b):  # the random baseline has no causal mask of its own
                rel_rows[j, positions[first + j] :] = 0.0
            on_rows(first, rel_rows, logits[first : first + b], probabilities[first : first + b])  # type: ignore[misc]

        with method_rules(model, method, checkpoint=checkpoint) as patch, _installed(recorder, model):
            with torch.no_grad():
                embeds = model.get_input_embeddings()(ids)
            inputs = [embeds]
            sink = patch.accounts.get("sink")
            if sink is not None:
                inputs.append(torch.ones(1, 1, dtype=acc, device=device))
            (rel, *held), _ = input_relevance(
                score,
                inputs,
                [-1] * len(inputs),
                method=method,
                steps=steps,
                ig_batch=ig_batch,
                backward_batch=backward_batch,
                checkpoint=checkpoint,
                seed=seed,
                progress=progress,
                should_cancel=should_cancel,
                timings=timings,
                on_rows=None if on_rows is None else rows_done,
                taps=recorder,
            )
        target_logits, probs = scores_at_input()
        if sink is not None:
            held_apart = held[0].to(acc)
            sink.leaf = None
        del seen, embeds
    for i, p in enumerate(positions):
        rel[i, p:] = 0.0
    check_finite(model, rel)
    result: dict[str, object] = {"relevance": rel, "logits": target_logits, "probabilities": probs, "timings": timings}
    if held_apart is not None:
        result["held_apart"] = held_apart
    if isinstance(recorder, ComponentRecorder) and not isinstance(components, Taps):
        result["components"] = [recorder.result(i, p, rel[i]) for i, p in enumerate(positions)]
    return result


def _recorder(
    model: nn.Module,
    method: str,
    components: bool | ComponentSpec | Taps,
    n: int,
    seq: int,
    checkpoint: bool | None,
) -> Taps | None:
    """The taps asked for (None: not asked); one-line errors where they cannot be had."""
    if isinstance(components, Taps):
        recorder: Taps | None = components
    else:
        spec = ComponentSpec.of(components)
        recorder = None if spec is None else ComponentRecorder(spec, n, seq, next(model.parameters()).dtype)
    if recorder is None:
        return None
    if get_method(method).computation != "gradient-x-input":
        raise InputError(
            f"component relevance needs a gradient x input method (an LRP rule set or grad-x-input), not '{method}'"
        )
    if checkpoint:
        raise InputError("component relevance cannot be combined with activation checkpointing; leave checkpoint off")
    return recorder


@contextmanager
def _installed(recorder: Taps | None, model: nn.Module) -> Iterator[None]:
    if recorder is None:
        yield
        return
    with recorder.installed(model):
        yield


# -------------------------------------------------------------------------- explain
TAKES_CHAT = True  # a context or chat=True makes the prompt a chat turn (when the tokenizer has a template)


def prompt_ids(
    tokenizer, prompt: str, context: str | None, *, chat: bool | None, system: str | None
) -> tuple[list[int], list[int]]:
    """The token ids of the prompt (a chat turn with a context or ``chat=True``, see :func:`build_prompt`) and
    the positions of its special and template tokens."""
    return build_prompt(tokenizer, prompt, context, chat=chat, system=system)


def explain_answer(
    model: nn.Module,
    tokenizer,
    prompt_ids: list[int],
    answer_ids: list[int],
    *,
    method: str,
    steps: int,
    seed: int,
    checkpoint: bool | None,
    progress: Progress | None,
    should_cancel: ShouldCancel | None,
    on_target: OnTarget | None = None,
    components: bool | ComponentSpec = False,
) -> AnswerExplanation:
    """Every answer token explained over the tokens before it (prompt + earlier answer tokens).

    ``on_target(i, target)``: answer token ``i`` is explained, called in order as the backward passes end."""
    ids = prompt_ids + answer_ids
    limit = context_length(model)
    if limit is not None and len(ids) > limit:
        too_long(len(ids), limit)
    positions = list(range(len(prompt_ids), len(ids)))
    tokens = token_strings(tokenizer, ids)
    spec = ComponentSpec.of(components)
    recorder = None
    if spec is not None:
        recorder = ComponentRecorder(spec, len(positions), len(ids), next(model.parameters()).dtype)

    def make(i: int, rel: torch.Tensor, logit: torch.Tensor, probability: torch.Tensor) -> TargetRelevance:
        p = positions[i]
        return TargetRelevance(
            position=p,
            token=tokens[p],
            id=ids[p],
            logit=float(logit),
            probability=float(probability),
            relevance=rel[:p].numpy().astype(np.float32),
            relevance_sum=float(rel[:p].double().sum()),
            components=None if recorder is None else recorder.result(i, p, rel),
        )

    stream = TargetStream(on_target, make)
    result = relevance(
        model,
        ids,
        positions,
        method=method,
        steps=steps,
        seed=seed,
        checkpoint=checkpoint,
        progress=progress,
        should_cancel=should_cancel,
        on_rows=None if on_target is None else stream.rows,
        components=False if recorder is None else recorder,
    )
    rel: torch.Tensor = result["relevance"]  # type: ignore[assignment]
    logits, probs = result["logits"], result["probabilities"]
    targets = [make(i, rel[i], logits[i], probs[i]) for i in range(len(positions))]  # type: ignore[index]
    stream.finish(targets)
    held = result.get("held_apart")
    return AnswerExplanation(
        tokens,
        ids,
        len(prompt_ids),
        targets,
        result["timings"],  # type: ignore[arg-type]
        held_apart=None if held is None else [float(v) for v in held],  # type: ignore[union-attr]
    )


__all__ = ["CHECKPOINT_ABOVE_TOKENS", "TAKES_CHAT", "explain_answer", "prompt_ids", "relevance"]
