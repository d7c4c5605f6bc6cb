"""Explain the answer of an encoder-decoder (T5) token by token.

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
    checkpoint_name,
    decoder_start_id,
    input_device,
    resolve_answer_ids,
    source_ids,
    token_strings,
)
from lrp_llm.errors import InputError, ShouldCancel
from lrp_llm.mechanism.gradients import Progress, batch_relevance, input_relevance, method_rules
from lrp_llm.methods import check_offered, default_method, get_method
from lrp_llm.results.attribution import Attribution, TargetRelevance
from lrp_llm.results.base import run_meta


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
) -> dict[str, object]:
    """Relevance of the source and decoder tokens for each answer token.

    Returns ``source`` (n_answer, n_source), ``decoder`` (n_answer, n_answer) where row
    ``i`` covers the decoder inputs (start token, answer[:-1]) and is zero from column
    ``i + 1`` on, ``logits`` and ``probabilities`` (n_answer,), and ``timings``.
    ``checkpoint``: encoder and decoder blocks recompute their activations in the backward pass.
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
    with method_rules(model, method, checkpoint=checkpoint):
        embed = model.get_input_embeddings()
        with torch.no_grad():
            src_e = embed(torch.tensor([src_ids], device=device))
            dec_e = embed(torch.tensor([dec_ids], device=device))
        t0 = time.perf_counter()
        (r_src, r_dec), values = input_relevance(
            score,
            [src_e, dec_e],
            [-1, -1],
            method=method,
            steps=steps,
            checkpoint=checkpoint,
            seed=seed,
            progress=progress,
            should_cancel=should_cancel,
        )
        timings["forward_backward"] = time.perf_counter() - t0
    for i in range(n):
        r_dec[i, i + 1 :] = 0.0  # the random baseline has no causal mask of its own
    logits = last_logits[0].cpu()  # the first scoring is always at the input itself
    probs = torch.softmax(logits.double(), dim=-1)[torch.arange(n), torch.tensor(answer_ids)]
    check_finite(model, r_src, r_dec)
    return {"source": r_src, "decoder": r_dec, "logits": values, "probabilities": probs, "timings": timings}


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
    ``(source (n_answer, n_source), decoder (n_answer, n_answer))``. Gradient methods
    only (attnlrp, cp-lrp, grad-x-input).
    """
    if method not in ("attnlrp", "cp-lrp", "grad-x-input"):
        raise InputError(f"batched relevance supports attnlrp, cp-lrp and grad-x-input, not '{method}'")
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

    with method_rules(model, method):
        embed = model.get_input_embeddings()
        with torch.no_grad():
            src_e, dec_e = embed(src), embed(dec)
        r_src, r_dec = batch_relevance(score, [src_e, dec_e], [-1, -1], method=method)
    return [
        (r_src[i, : len(a), : len(s)], r_dec[i, : len(a), : len(a)]) for i, (s, a) in enumerate(zip(sources, answers))
    ]


def explain_seq2seq(
    model: nn.Module,
    tokenizer,
    prompt: str | None = None,
    *,
    context: str | None = None,
    target: str | None = None,
    generate: int | None = None,
    method: str | None = None,
    steps: int = 32,
    prompt_ids: Sequence[int] | None = None,
    answer_ids: Sequence[int] | None = None,
    seed: int = 0,
    checkpoint: bool | None = None,
    model_name: str | None = None,
    progress: Progress | None = None,
    on_token: Callable[[int], None] | None = None,
    should_cancel: ShouldCancel | None = None,
) -> Attribution:
    """Explain every answer token of an encoder-decoder over source and decoder tokens.

    The answer is ``answer_ids`` if given, else the tokens of ``target`` (forced), else a
    greedy generation of up to ``generate`` tokens (default 20); ``method`` defaults to
    the family's (AttnLRP). In the result,
    ``source_tokens`` are the encoder's tokens, ``tokens`` the decoder's (start token, then
    the answer; ``prompt_length`` is 1), and each target carries ``source_relevance``
    beside ``relevance`` (decoder side); ``relevance_sum`` adds both. ``checkpoint``: the
    blocks recompute their activations in the backward pass (long inputs; default off).
    """
    start = time.perf_counter()
    method = method or default_method(model)
    get_method(method, "seq2seq")
    if prompt_ids is None:
        if prompt is None:
            raise InputError("the prompt is empty; pass some text with --prompt")
        prompt_ids = source_ids(tokenizer, prompt, context)
    src = [int(i) for i in prompt_ids]
    timings: dict[str, float] = {}
    if answer_ids is None:
        answer_ids = resolve_answer_ids(
            model,
            tokenizer,
            src,
            target=target,
            generate=generate,
            limit=None,
            timings=timings,
            on_token=on_token,
            should_cancel=should_cancel,
        )
    answer = [int(i) for i in answer_ids]
    if not answer:
        raise InputError("the target has no tokens; pass a non-empty --target")
    t0 = time.perf_counter()
    result = seq2seq_relevance(
        model,
        src,
        answer,
        method=method,
        steps=steps,
        seed=seed,
        checkpoint=bool(checkpoint),
        progress=progress,
        should_cancel=should_cancel,
    )
    timings.update(result["timings"])  # type: ignore[arg-type]
    timings["explain"] = time.perf_counter() - t0
    dec_ids = [decoder_start_id(model)] + answer
    tokens = token_strings(tokenizer, dec_ids)
    r_src: torch.Tensor = result["source"]  # type: ignore[assignment]
    r_dec: torch.Tensor = result["decoder"]  # type: ignore[assignment]
    targets = []
    for i in range(len(answer)):
        p = i + 1
        targets.append(
            TargetRelevance(
                position=p,
                token=tokens[p],
                id=dec_ids[p],
                logit=float(result["logits"][i]),  # type: ignore[index]
                probability=float(result["probabilities"][i]),  # type: ignore[index]
                relevance=r_dec[i, :p].numpy().astype(np.float32),
                relevance_sum=float(r_dec[i, :p].double().sum() + r_src[i].double().sum()),
                source_relevance=r_src[i].numpy().astype(np.float32),
            )
        )
    meta = run_meta(
        "seq2seq",
        method=method,
        rules=get_method(method).rules,
        steps=steps if method == "integrated-gradients" else None,
        dtype=next(model.parameters()).dtype,
        device=input_device(model),
    )
    return Attribution(
        model=model_name or checkpoint_name(model),
        method=method,
        tokens=tokens,
        input_ids=dec_ids,
        prompt_length=1,
        targets=targets,
        seconds=time.perf_counter() - start,
        timings=timings,
        meta=meta,
        source_tokens=token_strings(tokenizer, src),
        source_ids=src,
    )


__all__ = ["batch_seq2seq_relevance", "explain_seq2seq", "seq2seq_relevance"]
