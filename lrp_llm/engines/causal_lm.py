"""Explain one target or every generated token of a causal language model.

One forward pass over prompt + answer under the method's rules, logits computed only at
the explained positions, then one backward pass per explained token through the same
graph. Relevance of token ``j`` for target ``t`` is ``sum_d e[j, d] * grad[j, d]`` where
``e`` is the (scaled) input embedding.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from lrp_llm.archs import family_methods, find_arch, get_arch
from lrp_llm.errors import Cancelled, InputError, ShouldCancel, check_cancel
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.mechanism.patch import freeze_parameters
from lrp_llm.results.attribution import Attribution, TargetRelevance
from lrp_llm.results.base import run_meta

METHODS: tuple[str, ...] = (
    "attnlrp",
    "cp-lrp",
    "mambalrp",
    "grad-x-input",
    "saliency",
    "integrated-gradients",
    "hidden-attention",
    "random",
)
_RULES: dict[str, str | None] = {
    "attnlrp": "attnlrp",
    "cp-lrp": "cp-lrp",
    "mambalrp": "mambalrp",
    "grad-x-input": None,
    "saliency": None,
    "integrated-gradients": None,
    "hidden-attention": None,
    "random": None,
}
# Inputs longer than this recompute block activations in the backward pass.
CHECKPOINT_ABOVE_TOKENS = 4096

Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- prompts
def build_prompt_ids(
    tokenizer,
    prompt: str,
    context: str | None = None,
    *,
    chat: bool | None = None,
    system: str | None = None,
) -> list[int]:
    """Token ids of the prompt.

    With a ``context`` (or ``chat=True``) and a tokenizer that has a chat template, the
    prompt becomes one user turn ``context + "\\n" + prompt`` followed by the assistant
    header. Otherwise the text is tokenised as it is (next-token continuation).
    """
    if not prompt or not prompt.strip():
        raise InputError("the prompt is empty; pass some text with --prompt")
    text = f"{context}\n{prompt}" if context else prompt
    use_chat = chat if chat is not None else context is not None
    if use_chat and getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return [int(i) for i in enc["input_ids"]]
    return [int(i) for i in tokenizer(text, add_special_tokens=True)["input_ids"]]


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """Display string of each token (decoded one by one, special tokens kept)."""
    return [tokenizer.decode([int(i)], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids]


def stop_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def input_device(model: nn.Module) -> torch.device:
    weight = model.get_input_embeddings().weight
    if weight.device.type == "meta":  # offloaded by accelerate: hooks move inputs
        return torch.device("cpu")
    return weight.device


def context_length(model: nn.Module) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@torch.no_grad()
def generate_greedy(
    model: nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    stop: set[int] | None = None,
    *,
    on_token: Callable[[int], None] | None = None,
    should_cancel: ShouldCancel | None = None,
) -> list[int]:
    """Greedy decoding with the KV cache; the stop token, when reached, is included."""
    device = input_device(model)
    was_training = model.training
    model.eval()
    try:
        cur = torch.tensor([list(prompt_ids)], device=device)
        past = None
        # state-space models (Mamba) name their cache ``cache_params``
        cache_key = (
            "cache_params" if "cache_params" in inspect.signature(model.forward).parameters else "past_key_values"
        )
        out_ids: list[int] = []
        for _ in range(max_new_tokens):
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            out = model(input_ids=cur, use_cache=True, logits_to_keep=1, **{cache_key: past})
            past = getattr(out, cache_key)
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


# ------------------------------------------------------------------------ relevance
def _forward_logits(model: nn.Module, embeds: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Logits at positions ``keep`` only: (batch, n_keep, vocab)."""
    out = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=keep)
    return out.logits


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
) -> dict[str, object]:
    """Relevance of every token for the token at each of ``positions``.

    Returns ``relevance`` (n_targets, seq) float32 (zero from each position on),
    ``logits`` (n_targets,), ``probabilities`` (n_targets,) and ``timings``.
    The target at position ``p`` is ``input_ids[p]``, predicted from position ``p - 1``.
    ``method=None`` is the model family's default (AttnLRP; MambaLRP for Mamba).
    """
    method = default_method(model) if method is None else method
    if method not in METHODS:
        raise InputError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
    positions = [int(p) for p in positions]
    if not positions:
        raise InputError("nothing to explain: no target tokens")
    if min(positions) < 1 or max(positions) >= len(input_ids):
        raise InputError("target positions must lie inside the sequence, after its first token")
    if _RULES[method] is not None or method in family_methods():
        get_arch(model)  # an unsupported architecture: its own message, naming the supported ones
    offered = methods_for(model)
    if method not in offered:
        family = getattr(find_arch(model), "family", None) or type(model).__name__
        raise InputError(f"method '{method}' is not available for {family} models; choose one of: {', '.join(offered)}")
    rules = _RULES[method]
    device = input_device(model)
    ids = torch.tensor([list(input_ids)], device=device)
    seq = ids.shape[1]
    n = len(positions)
    keep = torch.tensor([p - 1 for p in positions], device=device)
    target_ids = torch.tensor([int(input_ids[p]) for p in positions], device=device)
    rows = torch.arange(n, device=device)
    if checkpoint is None:
        checkpoint = seq > CHECKPOINT_ABOVE_TOKENS
    timings: dict[str, float] = {}
    # float64 models keep float64 relevance (exact conservation checks); others float32.
    acc = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
    if method == "hidden-attention":
        from lrp_llm.engines.hidden_attention import hidden_attention

        t0 = time.perf_counter()
        all_logits, rel = hidden_attention(model, ids, keep, progress=progress, should_cancel=should_cancel)
        timings["forward_backward"] = time.perf_counter() - t0
        logits, rel = all_logits.to(acc), rel.to(acc)
    else:
        logits, rel = _gradient_relevance(
            model, ids, keep, target_ids, method, rules, steps, ig_batch, backward_batch, seed, checkpoint, acc,
            timings, progress, should_cancel,
        )  # fmt: skip
    for i, p in enumerate(positions):
        rel[i, p:] = 0.0
    logits = logits.cpu()
    rows, target_ids = rows.cpu(), target_ids.cpu()
    target_logits = logits[rows, target_ids]
    probs = torch.softmax(logits, dim=-1)[rows, target_ids]
    if not torch.isfinite(rel).all():
        raise FloatingPointError("relevance is not finite; run the model in float32 (--dtype float32)")
    return {"relevance": rel, "logits": target_logits, "probabilities": probs, "timings": timings}


def _gradient_relevance(
    model, ids, keep, target_ids, method, rules, steps, ig_batch, backward_batch, seed, checkpoint, acc, timings,
    progress, should_cancel,
):  # fmt: skip
    """``(logits (n, vocab), relevance (n, seq))`` of the gradient-based methods (LRP rule sets included)."""
    n, seq = len(target_ids), ids.shape[1]
    rows = torch.arange(n, device=ids.device)
    rel = torch.zeros(n, seq, dtype=acc)
    with lrp_rules(model, rules, checkpoint=checkpoint) as patch:
        freeze_parameters(model, patch)
        with torch.no_grad():
            embeds0 = model.get_input_embeddings()(ids)
        t0 = time.perf_counter()
        if method == "integrated-gradients":
            logits, grads = _integrated_gradients(
                model, embeds0, keep, target_ids, steps, ig_batch, backward_batch, checkpoint, progress, should_cancel
            )
            timings["forward_backward"] = time.perf_counter() - t0
            rel = (embeds0[0].to(acc).unsqueeze(0) * grads.to(acc)).sum(-1).cpu()
        else:
            with torch.enable_grad():
                embeds = embeds0.detach().clone().requires_grad_(True)
                all_logits = _forward_logits(model, embeds, keep)[0]  # (n, vocab)
                logits = all_logits.detach().to(acc)
                selected = all_logits[rows, target_ids]
                timings["forward"] = time.perf_counter() - t0
                t1 = time.perf_counter()
                if method == "random":
                    gen = torch.Generator().manual_seed(seed)
                    rel = torch.rand(n, seq, generator=gen) * 2 - 1
                    if progress is not None:
                        progress(n, n)
                else:
                    x = embeds[0].detach().to(acc)
                    if progress is not None:
                        progress(0, n)  # the forward pass is done; backward passes follow
                    for i, grads in _target_gradients(selected, embeds, backward_batch, checkpoint, should_cancel):
                        grad = grads[:, 0]  # (b, seq, d) for targets i .. i + b - 1
                        if method == "saliency":
                            rel[i : i + len(grad)] = grad.to(acc).norm(dim=-1).cpu()
                        else:
                            rel[i : i + len(grad)] = (x * grad.to(acc)).sum(-1).cpu()
                        if progress is not None:
                            progress(i + len(grad), n)
                timings["backward"] = time.perf_counter() - t1
                del selected, all_logits, embeds
    return logits, rel


def _target_gradients(selected, embeds, batch, checkpoint, should_cancel):
    """Yield ``(first_target, grads)``: grads (b, *embeds.shape) of b consecutive selected logits.

    Up to ``batch`` targets share one backward pass (a batch of one-hot cotangents,
    ``is_grads_batched``); the graph is kept until the last target. Falls back to one
    backward per target where batching is not possible (checkpointed blocks).
    """
    n = selected.shape[0]
    batch = 1 if checkpoint else max(1, int(batch))
    i = 0
    while i < n:
        check_cancel(should_cancel)
        b = min(batch, n - i)
        last = i + b >= n
        if b > 1:
            cotangents = torch.zeros(b, n, dtype=selected.dtype, device=selected.device)
            cotangents[torch.arange(b), torch.arange(i, i + b)] = 1
            try:
                # the graph is kept even after the last chunk so that a fallback can still run;
                # it is freed when the caller drops its references
                (grad,) = torch.autograd.grad(
                    selected, embeds, grad_outputs=cotangents, is_grads_batched=True, retain_graph=True
                )
            except RuntimeError:
                batch = 1  # an op without a batching rule: one target at a time
                continue
            yield i, grad
        else:
            (grad,) = torch.autograd.grad(selected[i], embeds, retain_graph=not last)
            yield i, grad.unsqueeze(0)
        i += b


def _integrated_gradients(
    model, embeds0, keep, target_ids, steps, ig_batch, backward_batch, checkpoint, progress, should_cancel
):
    """Mean gradient along the straight path from the zero embedding (midpoint rule)."""
    n = len(target_ids)
    rows = torch.arange(n, device=embeds0.device)
    steps = max(1, int(steps))
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    acc = torch.float64 if embeds0.dtype == torch.float64 else torch.float32
    grads = torch.zeros(n, *embeds0.shape[1:], dtype=acc, device=embeds0.device)
    logits = None
    done = 0
    total = steps * n
    if progress is not None:
        progress(0, total)
    # The real input is run once more (alpha = 1) for the logits it reports.
    with torch.no_grad():
        logits = _forward_logits(model, embeds0, keep)[0].to(acc)
    for start in range(0, steps, ig_batch):
        chunk = alphas[start : start + ig_batch].to(embeds0.device, embeds0.dtype)
        with torch.enable_grad():
            embeds = (chunk.view(-1, 1, 1) * embeds0).detach().requires_grad_(True)
            out = _forward_logits(model, embeds, keep)  # (b, n, vocab)
            selected = out[:, rows, target_ids].sum(0)  # (n,)
            for i, g in _target_gradients(selected, embeds, backward_batch, checkpoint, should_cancel):
                grads[i : i + len(g)] += g.to(acc).sum(1)  # g: (b, alphas, seq, d)
                done += len(chunk) * len(g)
                if progress is not None:
                    progress(done, total)
    return logits, grads / steps


# -------------------------------------------------------------------------- explain
def explain(
    model: nn.Module,
    tokenizer,
    prompt: str | None = None,
    *,
    context: str | None = None,
    target: str | None = None,
    generate: int | None = None,
    method: str | None = None,
    steps: int = 32,
    chat: bool | None = None,
    system: str | None = None,
    prompt_ids: Sequence[int] | None = None,
    answer_ids: Sequence[int] | None = None,
    seed: int = 0,
    checkpoint: bool | None = None,
    model_name: str | None = None,
    progress: Progress | None = None,
    on_token: Callable[[int], None] | None = None,
    should_cancel: ShouldCancel | None = None,
) -> Attribution:
    """Explain every answer token of ``prompt``.

    The answer is ``answer_ids`` if given, else the tokens of ``target`` (a forced
    continuation), else a greedy generation of up to ``generate`` tokens (default 20).
    Encoder-decoders (T5) are explained by :func:`lrp_llm.engines.seq2seq.explain_seq2seq`.
    """
    kind = _model_kind(model)
    if kind == "seq2seq":
        from lrp_llm.engines.seq2seq import explain_seq2seq

        return explain_seq2seq(
            model,
            tokenizer,
            prompt,
            context=context,
            target=target,
            generate=generate,
            method=method or default_method(model),
            steps=steps,
            prompt_ids=prompt_ids,
            answer_ids=answer_ids,
            seed=seed,
            model_name=model_name,
            progress=progress,
            on_token=on_token,
            should_cancel=should_cancel,
        )
    if kind == "image-classification":
        raise InputError("this model classifies images; explain one with explain_image(model, processor, image)")
    if kind == "encoder":
        raise InputError(
            "this is an embedding (encoder) model without a language-model head; "
            "explain a similarity with `xai-tui similarity` or lrp_llm.analyses.bilrp"
        )
    start = time.perf_counter()
    method = default_method(model) if method is None else method
    if prompt_ids is None:
        if prompt is None:
            raise InputError("the prompt is empty; pass some text with --prompt")
        prompt_ids = build_prompt_ids(tokenizer, prompt, context, chat=chat, system=system)
    prompt_ids = [int(i) for i in prompt_ids]
    limit = context_length(model)
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
            if limit is not None and len(prompt_ids) + n_new > limit:
                _too_long(len(prompt_ids) + n_new, limit)
            t0 = time.perf_counter()
            answer_ids = generate_greedy(
                model, prompt_ids, n_new, stop_ids(model, tokenizer), on_token=on_token, should_cancel=should_cancel
            )
            timings["generate"] = time.perf_counter() - t0
    answer_ids = [int(i) for i in answer_ids]
    if not answer_ids:
        raise InputError("the target has no tokens; pass a non-empty --target")
    ids = prompt_ids + answer_ids
    if limit is not None and len(ids) > limit:
        _too_long(len(ids), limit)
    positions = list(range(len(prompt_ids), len(ids)))
    t0 = time.perf_counter()
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
    )
    timings.update(result["timings"])  # type: ignore[arg-type]
    timings["explain"] = time.perf_counter() - t0
    tokens = token_strings(tokenizer, ids)
    rel: torch.Tensor = result["relevance"]  # type: ignore[assignment]
    targets = []
    for i, p in enumerate(positions):
        r = rel[i, :p].numpy().astype(np.float32)
        targets.append(
            TargetRelevance(
                position=p,
                token=tokens[p],
                id=ids[p],
                logit=float(result["logits"][i]),  # type: ignore[index]
                probability=float(result["probabilities"][i]),  # type: ignore[index]
                relevance=r,
                relevance_sum=float(rel[i, :p].double().sum()),
            )
        )
    meta = run_meta(
        "causal-lm",
        method=method,
        rules=_RULES[method],
        steps=steps if method == "integrated-gradients" else None,
        dtype=next(model.parameters()).dtype,
        device=input_device(model),
    )
    return Attribution(
        model=model_name or _model_name(model),
        method=method,
        tokens=tokens,
        input_ids=ids,
        prompt_length=len(prompt_ids),
        targets=targets,
        seconds=time.perf_counter() - start,
        timings=timings,
        meta=meta,
    )


def default_method(model: nn.Module) -> str:
    """The family's default LRP method ("attnlrp" for transformers, "mambalrp" for Mamba)."""
    return get_arch(model).default_method


def methods_for(model: nn.Module) -> tuple[str, ...]:
    """The methods ``model``'s family offers, its default first (unknown architectures: the plain-gradient ones)."""
    spec = find_arch(model)
    plain = [m for m, rules in _RULES.items() if rules is None and m not in family_methods()]
    if spec is None:
        return tuple(plain)
    usable = [m for m, rules in _RULES.items() if m in plain or rules in spec.rules or m in spec.extra_methods]
    return (spec.default_method, *[m for m in usable if m != spec.default_method])


def _model_kind(model: nn.Module) -> str | None:
    spec = find_arch(model)
    return None if spec is None else spec.kind


def _too_long(n: int, limit: int) -> None:
    raise InputError(f"the input has {n} tokens but the model's context is {limit}; shorten the prompt or --generate")


def _model_name(model: nn.Module) -> str:
    name = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    return str(name) or type(model).__name__


__all__ = ["METHODS", "build_prompt_ids", "explain", "generate_greedy", "methods_for", "relevance", "token_strings"]
