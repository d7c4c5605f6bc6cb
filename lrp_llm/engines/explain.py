"""``explain``: the one front door for text models; it picks the engine by the architecture's kind."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from lrp_llm.archs import find_arch
from lrp_llm.engines.causal_lm import explain_causal_lm
from lrp_llm.engines.seq2seq import explain_seq2seq
from lrp_llm.errors import InputError, ShouldCancel
from lrp_llm.mechanism.gradients import Progress
from lrp_llm.results.attribution import Attribution


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
    ``method`` defaults to the family's (:func:`lrp_llm.methods.methods_for` lists the
    others). Causal LMs and Mamba go to :func:`~lrp_llm.engines.causal_lm.explain_causal_lm`,
    encoder-decoders (T5) to :func:`~lrp_llm.engines.seq2seq.explain_seq2seq`; ``chat`` and
    ``system`` (a chat template's turns) do not apply to encoder-decoders and are refused there.
    """
    spec = find_arch(model)
    kind = None if spec is None else spec.kind
    if kind == "image-classification":
        raise InputError("this model classifies images; explain one with explain_image(model, processor, image)")
    if kind == "encoder":
        raise InputError(
            "this is an embedding (encoder) model without a language-model head; "
            "explain a similarity with `xai-tui similarity` or lrp_llm.analyses.bilrp"
        )
    if kind == "seq2seq":
        if chat or system:
            raise InputError(
                "chat and system prompts do not apply to encoder-decoder models; pass the question as the prompt"
            )
        return explain_seq2seq(
            model,
            tokenizer,
            prompt,
            context=context,
            target=target,
            generate=generate,
            method=method,
            steps=steps,
            prompt_ids=prompt_ids,
            answer_ids=answer_ids,
            seed=seed,
            checkpoint=checkpoint,
            model_name=model_name,
            progress=progress,
            on_token=on_token,
            should_cancel=should_cancel,
        )
    return explain_causal_lm(
        model,
        tokenizer,
        prompt,
        context=context,
        target=target,
        generate=generate,
        method=method,
        steps=steps,
        chat=chat,
        system=system,
        prompt_ids=prompt_ids,
        answer_ids=answer_ids,
        seed=seed,
        checkpoint=checkpoint,
        model_name=model_name,
        progress=progress,
        on_token=on_token,
        should_cancel=should_cancel,
    )


__all__ = ["explain"]
