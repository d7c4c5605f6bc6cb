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

from lrp_llm.archs import get_arch
from lrp_llm.engines.causal_lm import input_device
from lrp_llm.errors import Cancelled, InputError
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.mechanism.gradients import RULES, Progress, ShouldCancel, check_method, input_relevance
from lrp_llm.mechanism.patch import freeze_parameters
from lrp_llm.results.attribution import Attribution, TargetRelevance
from lrp_llm.results.base import run_meta


def source_ids(tokenizer, prompt: str, context: str | None = None) -> list[int]:
    """Encoder input ids; with a ``context`` the T5 reading-comprehension format ``question: ... context: ...``."""
    if not prompt or not prompt.strip():
        raise InputError("the prompt is empty; pass some text with --prompt")
    text = f"question: {prompt} context: {context}" if context else prompt
    return [int(i) for i in tokenizer(text, add_special_tokens=True)["input_ids"]]


def _start_id(model: nn.Module) -> int:
    start = getattr(model.config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(model.config, "pad_token_id", None)
    if start is None:
        raise InputError("the model's config has no decoder_start_token_id; set it in config.json")
    return int(start)


@torch.no_grad()
def generate_seq2seq(
    model: nn.Module,
    src_ids: Sequence[int],
    max_new_tokens: int,
    stop: set[int] | None = None,
    *,
    on_token: Callable[[int], None] | None = None,
    should_cancel: ShouldCancel | None = None,
) -> list[int]:
    """Greedy decoding (encoder run once, decoder with its KV cache); the stop token is included."""
    device = input_device(model)
    was_training = model.training
    model.eval()
    try:
        src = torch.tensor([list(src_ids)], device=device)
        encoder_outputs = model.get_encoder()(input_ids=src)
        cur = torch.tensor([[_start_id(model)]], device=device)
        past = None
        out_ids: list[int] = []
        for _ in range(max_new_tokens):
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            out = model(encoder_outputs=encoder_outputs, decoder_input_ids=cur, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = int(out.logits[0, -1].argmax())
            out_ids.append(nxt)
            if on_token is not None:
                on_token(nxt)
            if stop and nxt in stop:
                break
            cur = torch.tensor([[nxt]], device=device)
        return out_ids
    finally:
        model.train(was_training)


def seq2seq_relevance(
    model: nn.Module,
    src_ids: Sequence[int],
    answer_ids: Sequence[int],
    *,
    method: str = "attnlrp",
    steps: int = 32,
    seed: int = 0,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> dict[str, object]:
    """Relevance of the source and decoder tokens for each answer token.

    Returns ``source`` (n_answer, n_source), ``decoder`` (n_answer, n_answer) where row
    ``i`` covers the decoder inputs (start token, answer[:-1]) and is zero from column
    ``i + 1`` on, ``logits`` and ``probabilities`` (n_answer,), and ``timings``.
    """
    check_method(method)
    src_ids = [int(i) for i in src_ids]
    answer_ids = [int(i) for i in answer_ids]
    if not src_ids:
        raise InputError("the prompt has no tokens; pass some text with --prompt")
    if not answer_ids:
        raise InputError("the target has no tokens; pass a non-empty --target")
    rules = RULES[method]
    if rules is not None:
        spec = get_arch(model)
        if rules not in spec.rules:
            raise InputError(f"method '{method}' is not available for {spec.family} models")
    device = input_device(model)
    dec_ids = [_start_id(model)] + answer_ids[:-1]
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
    with lrp_rules(model, rules) as patch:
        freeze_parameters(model, patch)
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
            seed=seed,
            progress=progress,
            should_cancel=should_cancel,
        )
        timings["forward_backward"] = time.perf_counter() - t0
    for i in range(n):
        r_dec[i, i + 1 :] = 0.0  # the random baseline has no causal mask of its own
    logits = last_logits[0].cpu()  # the first scoring is always at the input itself
    probs = torch.softmax(logits.double(), dim=-1)[torch.arange(n), torch.tensor(answer_ids)]
    if not (torch.isfinite(r_src).all() and torch.isfinite(r_dec).all()):
        raise FloatingPointError("relevance is not finite; run the model in float32 (--dtype float32)")
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
    start = _start_id(model)
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
    lengths = torch.tensor([len(a) for a in answers], device=device)
    acc = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
    r_src = torch.zeros(b, t_len, s_len, dtype=acc)
    r_dec = torch.zeros(b, t_len, t_len, dtype=acc)
    with lrp_rules(model, RULES[method]) as patch:
        freeze_parameters(model, patch)
        embed = model.get_input_embeddings()
        with torch.enable_grad():
            src_e = embed(src).detach().requires_grad_(True)
            dec_e = embed(dec).detach().requires_grad_(True)
            logits = model(
                inputs_embeds=src_e, attention_mask=mask, decoder_inputs_embeds=dec_e, use_cache=False
            ).logits
            rows = torch.arange(b, device=device)
            for j in range(t_len):
                live = lengths > j
                score = logits[rows[live], j, tgt[live, j]].sum()
                g_src, g_dec = torch.autograd.grad(score, (src_e, dec_e), retain_graph=j < t_len - 1)
                r_src[:, j] = (src_e.detach().to(acc) * g_src.to(acc)).sum(-1).cpu()
                r_dec[:, j] = (dec_e.detach().to(acc) * g_dec.to(acc)).sum(-1).cpu()
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
    beside ``relevance`` (decoder side); ``relevance_sum`` adds both.
    """
    from lrp_llm.engines.causal_lm import stop_ids, token_strings

    start = time.perf_counter()
    method = method or get_arch(model).default_method
    check_method(method)
    if prompt_ids is None:
        if prompt is None:
            raise InputError("the prompt is empty; pass some text with --prompt")
        prompt_ids = source_ids(tokenizer, prompt, context)
    src = [int(i) for i in prompt_ids]
    timings: dict[str, float] = {}
    if answer_ids is None:
        if target is not None:
            if not target:
                raise InputError("the target is empty; pass the text to explain with --target")
            answer_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        else:
            n_new = 20 if generate is None else int(generate)
            if n_new < 1:
                raise InputError("--generate must be at least 1")
            t0 = time.perf_counter()
            answer_ids = generate_seq2seq(
                model, src, n_new, stop_ids(model, tokenizer), on_token=on_token, should_cancel=should_cancel
            )
            timings["generate"] = time.perf_counter() - t0
    answer = [int(i) for i in answer_ids]
    if not answer:
        raise InputError("the target has no tokens; pass a non-empty --target")
    t0 = time.perf_counter()
    result = seq2seq_relevance(
        model, src, answer, method=method, steps=steps, seed=seed, progress=progress, should_cancel=should_cancel
    )
    timings.update(result["timings"])  # type: ignore[arg-type]
    timings["explain"] = time.perf_counter() - t0
    dec_ids = [_start_id(model)] + answer
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
        rules=RULES[method],
        steps=steps if method == "integrated-gradients" else None,
        dtype=next(model.parameters()).dtype,
        device=input_device(model),
    )
    name = model_name or str(getattr(model, "name_or_path", "") or type(model).__name__)
    return Attribution(
        model=name,
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


__all__ = ["batch_seq2seq_relevance", "explain_seq2seq", "generate_seq2seq", "seq2seq_relevance", "source_ids"]
