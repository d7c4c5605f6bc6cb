"""``explain``: the one front door for text models; it picks the engine by the architecture's kind.

The steps every kind shares happen here once (the method, the prompt and answer ids,
generation, timings, the result and its run metadata); an engine module
(:mod:`~lrp_llm.engines.causal_lm`, :mod:`~lrp_llm.engines.seq2seq`) contributes only
``prompt_ids`` (how a prompt becomes model input), ``explain_answer`` (the relevance
of every answer token) and ``TAKES_CHAT`` (whether a chat template's turns apply).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from torch import nn

from lrp_llm.archs import check_not_encoder, find_arch
from lrp_llm.engines import causal_lm, generation, seq2seq
from lrp_llm.engines.generation import OnTarget, checkpoint_name, context_length, input_device, resolve_answer_ids
from lrp_llm.errors import InputError, ShouldCancel
from lrp_llm.mechanism.components import ComponentSpec
from lrp_llm.mechanism.gradients import Progress
from lrp_llm.methods import default_method, get_method
from lrp_llm.results.attribution import Attribution
from lrp_llm.results.base import run_meta

# the engine of each kind of text model; unregistered architectures are treated as causal LMs
ENGINES = {"causal-lm": causal_lm, "seq2seq": seq2seq}


def text_kind(model: nn.Module) -> str:
    """The model's kind for :func:`explain` ("causal-lm" or "seq2seq"); a one-line error for other kinds."""
    spec = find_arch(model)
    kind = "causal-lm" if spec is None else spec.kind
    if kind == "image-classification":
        raise InputError("this model classifies images; explain one with explain_image(model, processor, image)")
    if kind == "image-encoder":
        raise InputError(
            "this is a vision tower (image embeddings); explain why two images are similar with "
            "lrp_llm.analyses.image_bilrp.explain_image_similarity"
        )
    check_not_encoder(model)
    return kind


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
    on_target: OnTarget | None = None,
    template_positions: Sequence[int] | None = None,
    components: bool | ComponentSpec = False,
) -> Attribution:
    """Explain every answer token of ``prompt``.

    The answer is ``answer_ids`` if given, else the tokens of ``target`` (a forced
    continuation), else a greedy generation of up to ``generate`` tokens (default 20).
    ``method`` defaults to the family's (:func:`lrp_llm.methods.methods_for` lists the
    others). Causal LMs and Mamba: relevance over the tokens before each answer token.
    Encoder-decoders (T5): over the source tokens (``source_tokens``, per target
    ``source_relevance``) and the decoder tokens before it; ``chat`` and ``system`` (a chat
    template's turns) do not apply there and are refused. ``checkpoint``: recompute block
    activations in the backward pass (long inputs; causal LMs do it above 4096 tokens).
    ``on_token(id)``: each generated token as it comes; ``on_target(i, target)``: answer token
    ``i``'s :class:`~lrp_llm.results.attribution.TargetRelevance` as soon as it is explained,
    in order (the first after one forward and one backward pass), equal to ``targets[i]``.
    Causal LMs: ``meta["template_positions"]`` lists the tokens the user did not write (special tokens,
    the chat template's headers and default system prompt); displays leave them out of the colour scale.
    With ``prompt_ids``, ``template_positions`` gives the prompt's (default: its special tokens).
    ``components`` (True, or a :class:`~lrp_llm.mechanism.components.ComponentSpec`): each target also gets
    ``components``, a :class:`~lrp_llm.results.components.ComponentRelevance` (relevance per layer and position,
    per attention / MLP / mixer output, per head, top-k neurons per layer), from the same backward passes;
    causal LMs and gradient x input methods (the LRP rule sets, grad-x-input) only.
    """
    start = time.perf_counter()
    kind = text_kind(model)
    engine = ENGINES[kind]
    method = default_method(model) if method is None else method
    get_method(method, kind)
    if ComponentSpec.of(components) is not None:
        if kind != "causal-lm":
            raise InputError("component relevance is available for causal language models (and Mamba) only")
        if get_method(method).computation != "gradient-x-input":
            raise InputError(
                f"component relevance needs a gradient x input method (an LRP rule set or grad-x-input), not '{method}'"
            )
    if (chat or system) and not engine.TAKES_CHAT:
        raise InputError(
            "chat and system prompts do not apply to encoder-decoder models; pass the question as the prompt"
        )
    if prompt_ids is None:
        if prompt is None:
            raise InputError("the prompt is empty; pass some text with --prompt")
        prompt_ids, template_positions = engine.prompt_ids(tokenizer, prompt, context, chat=chat, system=system)
    elif template_positions is None and kind == "causal-lm":
        template_positions = generation.template_positions(
            tokenizer, prompt_ids
        )  # special tokens only: the text is not known here
    prompt_ids = [int(i) for i in prompt_ids]
    timings: dict[str, float] = {}
    if answer_ids is None:
        limit = context_length(model) if kind == "causal-lm" else None
        answer_ids = resolve_answer_ids(
            model,
            tokenizer,
            prompt_ids,
            target=target,
            generate=generate,
            limit=limit,
            timings=timings,
            on_token=on_token,
            should_cancel=should_cancel,
        )
    answer_ids = [int(i) for i in answer_ids]
    if not answer_ids:
        raise InputError("the target has no tokens; pass a non-empty --target")
    t0 = time.perf_counter()
    part = engine.explain_answer(
        model,
        tokenizer,
        prompt_ids,
        answer_ids,
        method=method,
        steps=steps,
        seed=seed,
        checkpoint=checkpoint,
        progress=progress,
        should_cancel=should_cancel,
        on_target=on_target,
        **({"components": components} if ComponentSpec.of(components) is not None else {}),
    )
    timings.update(part.timings)
    timings["explain"] = time.perf_counter() - t0
    spec = get_method(method)
    meta = run_meta(
        kind,
        method=method,
        rules=spec.rules,
        steps=spec.steps_or_none(steps),
        dtype=next(model.parameters()).dtype,
        device=input_device(model),
    )
    if part.held_apart is not None:
        # relevance the rules held apart instead of passing it on (attnlrp-sink): per target, for the conservation
        # line (sum of input relevance + held apart) / logit
        meta["held_apart"] = part.held_apart
    if template_positions is not None:
        n = len(prompt_ids)
        answer_special = [
            n + k for k in generation.template_positions(tokenizer, answer_ids)
        ]  # e.g. the end-of-turn token
        meta["template_positions"] = sorted(
            {int(k) for k in template_positions if 0 <= int(k) < n} | set(answer_special)
        )
    return Attribution(
        model=model_name or checkpoint_name(model),
        method=method,
        tokens=part.tokens,
        input_ids=part.input_ids,
        prompt_length=part.prompt_length,
        targets=part.targets,
        seconds=time.perf_counter() - start,
        timings=timings,
        meta=meta,
        source_tokens=part.source_tokens,
        source_ids=part.source_ids,
    )


__all__ = ["ENGINES", "explain", "text_kind"]
