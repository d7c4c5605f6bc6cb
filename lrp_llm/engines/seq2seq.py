"""Explain the answer of an encoder-decoder (T5, BART, Marian, ...) token by token.

Each answer token is explained over both inputs of the model: the encoder's source
tokens and the decoder tokens before it (the start token and the earlier answer
tokens). One forward pass over source + decoder input under the method's rules, then
one backward pass per answer token through the same graph. Relevance of a token is
``sum_d e[j, d] * grad[j, d]`` of its input embedding ``e``; the conservation ratio of a
target counts both sides: (sum of source relevance + sum of decoder relevance) / logit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from lrp_llm.engines.finite import check_finite
from lrp_llm.engines.generation import (
    AnswerExplanation,
    OnTarget,
    TargetStream,
    decoder_start_id,
    input_device,
    source_ids,
    token_strings,
)
from lrp_llm.errors import InputError, ShouldCancel
from lrp_llm.mechanism.gradients import Progress, batch_relevance, input_relevance, method_rules
from lrp_llm.methods import check_offered, get_method
from lrp_llm.results.attribution import TargetRelevance


def _embedding_for(stack: nn.Module, table: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Token ids (batch, pos) -> the ``inputs_embeds`` (batch, pos, d_model) for which ``stack`` computes
    what it computes from those ``input_ids``.

    A stack with its own ``embed_scale`` (Marian, Pegasus, Blenderbot-Small: ``scale_embedding``)
    may apply it to ``input_ids`` only, to both inputs, or not at all; which one is read from
    the stack itself: its output for the ids is compared with its output for the two candidate
    embeddings (unscaled, scaled), and the closer candidate is used. (BART's scale sits in its
    embedding module and T5 has none: nothing to probe.)
    """
    scale = getattr(stack, "embed_scale", None)
    if not isinstance(scale, int | float) or isinstance(scale, bool) or scale == 1.0:
        return table

    def embed(ids: torch.Tensor) -> torch.Tensor:
        candidates = (table(ids), table(ids) * scale)
        with torch.no_grad():
            want = stack(input_ids=ids, use_cache=False).last_hidden_state
            errors = [
                float((stack(inputs_embeds=e, use_cache=False).last_hidden_state - want).abs().max())
                for e in candidates
            ]
        return candidates[errors.index(min(errors))]

    return embed


def stack_embeddings(model: nn.Module) -> tuple[Callable, Callable]:
    """``(embed_source, embed_decoder)``: token ids (batch, pos) -> the encoder's and the decoder's
    ``inputs_embeds`` (batch, pos, d_model) that give the same forward as their ``input_ids``."""
    embeds = []
    for stack in (model.get_encoder(), model.get_decoder()):
        table = getattr(stack, "embed_tokens", None)
        embeds.append(_embedding_for(stack, model.get_input_embeddings() if table is None else table))
    return embeds[0], embeds[1]


def seq2seq_relevance(
    model: nn.Module,
    src_ids: Sequence[int],
    answer_ids: Sequence[int],
    *,
    method: str = "attnlrp",
    steps: int = 32,
    seed: int = 0,
    checkpoint: bool = False,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
    on_rows: Callable[..., None] | None = None,
) -> dict[str, object]:
    """Relevance of the source and decoder tokens for each answer token.

    Returns ``source`` (n_answer, n_source), ``decoder`` (n_answer, n_answer) where row
    ``i`` covers the decoder inputs (start token, answer[:-1]) and is zero from column
    ``i + 1`` on, ``logits`` and ``probabilities`` (n_answer,), and ``timings``.
    ``checkpoint``: encoder and decoder blocks recompute their activations in the backward pass.
    ``on_rows(first, source, decoder, logits, probabilities)``: answer tokens ``first`` .. are
    done (rows of the returned tensors, in order), called as the backward passes finish.
    """
    get_method(method, "seq2seq")
    src_ids = [int(i) for i in src_ids]
    answer_ids = [int(i) for i in answer_ids]
    if not src_ids:
        raise InputError("the prompt has no tokens; pass some text with --prompt")
    if not answer_ids:
        raise InputError("the target has no tokens; pass a non-empty --target")
    check_offered(model, method)
    device = input_device(model)
    dec_ids = [decoder_start_id(model)] + answer_ids[:-1]
    n = len(answer_ids)
    rows = torch.arange(n, device=device)
    targets = torch.tensor(answer_ids, device=device)
    last_logits: list[torch.Tensor] = []

    def score(xs: list[torch.Tensor]) -> torch.Tensor:
        src_e, dec_e = xs
        logits = model(inputs_embeds=src_e, decoder_inputs_embeds=dec_e, use_cache=False).logits  # (b, n, vocab)
        last_logits.append(logits[0].detach())
        return logits[:, rows, targets]

    timings: dict[str, float] = {}
    picked: list[tuple[torch.Tensor, torch.Tensor]] = []

    def scores_at_input() -> tuple[torch.Tensor, torch.Tensor]:
        """The answer tokens' logits (float32, float64 for a float64 model) and probabilities (float64)."""
        if not picked:  # the first scoring is always at the input itself
            logits = last_logits[0].cpu()[torch.arange(n), torch.tensor(answer_ids)]
            acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
            probs = torch.softmax(last_logits[0].cpu().double(), dim=-1)[torch.arange(n), torch.tensor(answer_ids)]
            picked.append((logits.to(acc), probs))
        return picked[0]

    def rows_done(first: int, done: list[torch.Tensor]) -> None:
        src_rows, dec_rows = done[0], done[1].clone()
        b = src_rows.shape[0]
        for j in range(b):  # the random baseline has no causal mask of its own
            dec_rows[j, first + j + 1 :] = 0.0
        logits, probs = scores_at_input()
        on_rows(first, src_rows, dec_rows, logits[first : first + b], probs[first : first + b])  # type: ignore[misc]

    embed_src, embed_dec = stack_embeddings(model)
    with method_rules(model, method, checkpoint=checkpoint):
        with torch.no_grad():
            src_e = embed_src(torch.tensor([src_ids], device=device))
            dec_e = embed_dec(torch.tensor([dec_ids], device=device))
        t0 = time.perf_counter()
        (r_src, r_dec), _ = input_relevance(
            score,
            [src_e, dec_e],
            [-1, -1],
            method=method,
            steps=steps,
            checkpoint=checkpoint,
            seed=seed,
            progress=progress,
            should_cancel=should_cancel,
            on_rows=None if on_rows is None else rows_done,
        )
        timings["forward_backward"] = time.perf_counter() - t0
    for i in range(n):
        r_dec[i, i + 1 :] = 0.0  # the random baseline has no causal mask of its own
    logits, probs = scores_at_input()
    check_finite(model, r_src, r_dec)
    return {"source": r_src, "decoder": r_dec, "logits": logits, "probabilities": probs, "timings": timings}


def batch_seq2seq_relevance(
    model: nn.Module,
    sources: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    *,
    method: str = "attnlrp",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`seq2seq_relevance` for many examples at once (evaluation over a data set).

    Examples are padded into one batch (source padding masked); examples do not
    interact, so one backward pass of the summed logits of every example's ``j``-th
    answer token gives each example its own relevance. Returns per example
    ``(source (n_answer, n_source), decoder (n_answer, n_answer))``. The methods one
    backward pass can serve for a batch (:attr:`lrp_llm.methods.Method.batchable`).
    """
    device = input_device(model)
    pad = int(getattr(model.config, "pad_token_id", None) or 0)
    start = decoder_start_id(model)
    b, s_len, t_len = len(sources), max(map(len, sources)), max(map(len, answers))
    src = torch.full((b, s_len), pad, dtype=torch.long)
    mask = torch.zeros(b, s_len, dtype=torch.long)
    dec = torch.full((b, t_len), pad, dtype=torch.long)
    tgt = torch.full((b, t_len), pad, dtype=torch.long)
    for i, (s, a) in enumerate(zip(sources, answers)):
        src[i, : len(s)] = torch.tensor(list(s))
        mask[i, : len(s)] = 1
        dec[i, : len(a)] = torch.tensor([start, *list(a)[:-1]])
        tgt[i, : len(a)] = torch.tensor(list(a))
    src, mask, dec, tgt = src.to(device), mask.to(device), dec.to(device), tgt.to(device)
    rows = torch.arange(b, device=device)[:, None]
    cols = torch.arange(t_len, device=device)

    def score(xs: list[torch.Tensor]) -> torch.Tensor:
        src_e, dec_e = xs
        logits = model(inputs_embeds=src_e, attention_mask=mask, decoder_inputs_embeds=dec_e, use_cache=False).logits
        # (b, t_len); the scores past an example's answer belong to its padding and are cut off below
        return logits[rows, cols, tgt]

    embed_src, embed_dec = stack_embeddings(model)
    with method_rules(model, method):
        with torch.no_grad():
            src_e, dec_e = embed_src(src), embed_dec(dec)
        r_src, r_dec = batch_relevance(score, [src_e, dec_e], [-1, -1], method=method)
    return [
        (r_src[i, : len(a), : len(s)], r_dec[i, : len(a), : len(a)]) for i, (s, a) in enumerate(zip(sources, answers))
    ]


# encoder-decoders take no chat template's turns
TAKES_CHAT = False


def prompt_ids(
    tokenizer, prompt: str, context: str | None, *, chat: bool | None, system: str | None
) -> tuple[list[int], None]:
    """Encoder input ids (T5's ``question: ... context: ...`` with a context); ``chat``/``system`` unused. No
    template positions: the explained tokens are the decoder's."""
    return source_ids(tokenizer, prompt, context), None


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
) -> AnswerExplanation:
    """Every answer token explained over the source (encoder) tokens and the decoder tokens before it.

    ``tokens`` are the decoder's (start token, then the answer; ``prompt_length`` 1), each
    target carries ``source_relevance`` beside ``relevance`` (decoder side), and its
    ``relevance_sum`` adds both. ``on_target(i, target)``: answer token ``i`` is explained,
    called in order as the backward passes end.
    """
    dec_ids = [decoder_start_id(model)] + answer_ids
    tokens = token_strings(tokenizer, dec_ids)

    def make(i: int, src: torch.Tensor, dec: torch.Tensor, logit: torch.Tensor, probability: torch.Tensor):
        return TargetRelevance(
            position=i + 1,
            token=tokens[i + 1],
            id=dec_ids[i + 1],
            logit=float(logit),
            probability=float(probability),
            relevance=dec[: i + 1].numpy().astype(np.float32),
            relevance_sum=float(dec[: i + 1].double().sum() + src.double().sum()),
            source_relevance=src.numpy().astype(np.float32),
        )

    stream = TargetStream(on_target, make)
    result = seq2seq_relevance(
        model,
        prompt_ids,
        answer_ids,
        method=method,
        steps=steps,
        seed=seed,
        checkpoint=bool(checkpoint),
        progress=progress,
        should_cancel=should_cancel,
        on_rows=None if on_target is None else stream.rows,
    )
    r_src: torch.Tensor = result["source"]  # type: ignore[assignment]
    r_dec: torch.Tensor = result["decoder"]  # type: ignore[assignment]
    logits, probs = result["logits"], result["probabilities"]
    targets = [make(i, r_src[i], r_dec[i], logits[i], probs[i]) for i in range(len(answer_ids))]  # type: ignore[index]
    stream.finish(targets)
    return AnswerExplanation(
        tokens,
        dec_ids,
        1,
        targets,
        result["timings"],  # type: ignore[arg-type]
        source_tokens=token_strings(tokenizer, prompt_ids),
        source_ids=list(prompt_ids),
    )


__all__ = ["TAKES_CHAT", "batch_seq2seq_relevance", "explain_answer", "prompt_ids", "seq2seq_relevance"]
