"""Prompt ids, greedy decoding and token strings: what every text engine needs around its relevance pass.

Decoder-only models (causal LMs, Mamba) and encoder-decoders (T5) share one greedy loop;
an encoder-decoder runs its encoder once and decodes from its start token.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lrp_llm.errors import InputError, ShouldCancel, check_cancel


@dataclass
class AnswerExplanation:
    """What a text engine (``causal_lm.explain_answer``, ``seq2seq.explain_answer``) hands the
    front door :func:`lrp_llm.engines.explain.explain`: the fields of an
    :class:`~lrp_llm.results.attribution.Attribution` that depend on the kind of model.
    ``targets`` are :class:`~lrp_llm.results.attribution.TargetRelevance`; ``timings`` in seconds."""

    tokens: list[str]
    input_ids: list[int]
    prompt_length: int
    targets: list[Any]
    timings: dict[str, float] = field(default_factory=dict)
    source_tokens: list[str] | None = None
    source_ids: list[int] | None = None
    # per target, the relevance the rule set held apart (attnlrp-sink), else None
    held_apart: list[float] | None = None


# on_target(index, target): answer token ``index`` is explained (a TargetRelevance)
OnTarget = Callable[[int, Any], None]


class TargetStream:
    """Hands every answer token's :class:`~lrp_llm.results.attribution.TargetRelevance` to
    ``on_target`` once, in order: each as soon as its backward pass ends (:meth:`rows`, from
    the gradient engine's ``on_rows``), the rest when the whole answer is done (:meth:`finish`).

    ``make(index, *row)`` builds a target from its rows; the engine builds its final list
    with the same ``make``, so what was streamed equals what is returned.
    """

    def __init__(self, on_target: OnTarget | None, make: Callable[..., Any]) -> None:
        self.on_target, self.make, self.sent = on_target, make, 0

    def rows(self, first: int, *rows: Any) -> None:
        """Targets ``first`` .. ``first + len(rows[0]) - 1`` are done; ``rows[k][j]`` is target ``first + j``'s."""
        if self.on_target is None:
            return
        for j in range(len(rows[0])):
            self.on_target(first + j, self.make(first + j, *(r[j] for r in rows)))
        self.sent = max(self.sent, first + len(rows[0]))

    def finish(self, targets: Sequence[Any]) -> None:
        """Every target not streamed yet (methods that finish all targets at once)."""
        if self.on_target is not None:
            for i in range(self.sent, len(targets)):
                self.on_target(i, targets[i])
            self.sent = len(targets)


# --------------------------------------------------------------------------- prompts
def check_text(what: str, text: str | None) -> None:
    """A one-line :class:`InputError` when ``text`` holds a lone surrogate (undecodable bytes from
    the command line arrive as such), which no tokenizer accepts."""
    for i, c in enumerate(text or ""):
        if "\ud800" <= c <= "\udfff":
            raise InputError(
                f"the {what} is not valid text (undecodable bytes or a lone surrogate at character {i + 1}); "
                "pass UTF-8 text"
            )


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
    return build_prompt(tokenizer, prompt, context, chat=chat, system=system)[0]


def build_prompt(
    tokenizer,
    prompt: str,
    context: str | None = None,
    *,
    chat: bool | None = None,
    system: str | None = None,
) -> tuple[list[int], list[int]]:
    """``(ids, template)``: the ids of :func:`build_prompt_ids` and the positions of the tokens the user did
    not write (:func:`template_positions`)."""
    if not prompt or not prompt.strip():
        raise InputError("the prompt is empty; pass some text with --prompt")
    for what, value in (("prompt", prompt), ("context", context), ("system prompt", system)):
        check_text(what, value)
    text = f"{context}\n{prompt}" if context else prompt
    use_chat = chat if chat is not None else context is not None
    if use_chat and getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        ids = [int(i) for i in enc["input_ids"]]
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return ids, template_positions(tokenizer, ids, rendered, [t for t in (system, text) if t])
    ids = [int(i) for i in tokenizer(text, add_special_tokens=True)["input_ids"]]
    return ids, template_positions(tokenizer, ids)


def special_ids(tokenizer) -> set[int]:
    """The ids of the tokenizer's special tokens (BOS, EOS, padding, chat markers such as ``<|im_start|>``)."""
    out = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    for i, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(token, "special", False):
            out.add(int(i))
    return out


def template_positions(
    tokenizer, ids: Sequence[int], rendered: str | None = None, user: Sequence[str] = ()
) -> list[int]:
    """Positions in ``ids`` of tokens the user did not write: special tokens, and where ``rendered`` (the chat
    template's text that ``ids`` tokenise) is given, every token outside the user's texts ``user`` (role
    headers, a default system prompt). Where the template's text cannot be matched to ``ids`` token by token
    (a tokenizer without offsets, a template that tokenises otherwise), only the special tokens."""
    special = special_ids(tokenizer)
    marked = {k for k, i in enumerate(ids) if int(i) in special}
    if rendered is None or not user:
        return sorted(marked)
    try:
        enc = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):  # slow tokenizers have no offsets
        return sorted(marked)
    if [int(i) for i in enc["input_ids"]] != [int(i) for i in ids]:
        return sorted(marked)
    spans = []
    start = 0
    for text in user:  # in the order the template writes them
        at = rendered.find(text, start)
        if at < 0:
            return sorted(marked)
        spans.append((at, at + len(text)))
        start = at + len(text)
    for k, (a, b) in enumerate(enc["offset_mapping"]):
        if not any(lo <= a and b <= hi for lo, hi in spans):
            marked.add(k)
    return sorted(marked)


def source_ids(tokenizer, prompt: str, context: str | None = None) -> list[int]:
    """Encoder input ids; with a ``context`` the T5 reading-comprehension format ``question: ... context: ...``."""
    if not prompt or not prompt.strip():
        raise InputError("the prompt is empty; pass some text with --prompt")
    for what, value in (("prompt", prompt), ("context", context)):
        check_text(what, value)
    text = f"question: {prompt} context: {context}" if context else prompt
    return [int(i) for i in tokenizer(text, add_special_tokens=True)["input_ids"]]


def decoder_start_id(model: nn.Module) -> int:
    """The token an encoder-decoder's decoder starts from."""
    start = getattr(model.config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(model.config, "pad_token_id", None)
    if start is None:
        raise InputError("the model's config has no decoder_start_token_id; set it in config.json")
    return int(start)


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """Display string of each token (decoded one by one, special tokens kept)."""
    return [tokenizer.decode([int(i)], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids]


def stop_ids(model, tokenizer) -> set[int]:
    """End-of-sequence ids of the generation config, the model config and the tokenizer."""
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
        value = getattr(model.config.get_text_config(), name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def checkpoint_name(model: nn.Module) -> str:
    """The checkpoint's name or path, else the model class."""
    name = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    return str(name) or type(model).__name__


# -------------------------------------------------------------------------- decoding
@torch.no_grad()
def generate_greedy(
    model: nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    stop: set[int] | None = None,
    *,
    on_token: Callable[[int], None] | None = None,
    should_cancel: ShouldCancel | None = None,
    stop_when: Callable[[list[int]], bool] | None = None,
) -> list[int]:
    """Greedy decoding with the KV cache; the stop token, when reached, is included. ``stop_when(tokens)``:
    decoding also stops after a token for which it is true (the tokens so far).

    ``prompt_ids``: the decoder's prompt, or for an encoder-decoder the encoder's input
    (the encoder runs once; decoding starts from :func:`decoder_start_id`).
    """
    device = input_device(model)
    was_training = model.training
    model.eval()
    try:
        prompt = torch.tensor([list(prompt_ids)], device=device)
        if getattr(model.config, "is_encoder_decoder", False):
            fixed = {"encoder_outputs": model.get_encoder()(input_ids=prompt)}
            cur, ids_key, cache_key = (
                torch.tensor([[decoder_start_id(model)]], device=device),
                "decoder_input_ids",
                "past_key_values",
            )
        else:
            # recurrent models name their cache ``cache_params`` (Mamba, xLSTM) or ``state`` (RWKV)
            parameters = inspect.signature(model.forward).parameters
            fixed = {"logits_to_keep": 1}
            cur, ids_key = prompt, "input_ids"
            cache_key = next((k for k in ("cache_params", "state") if k in parameters), "past_key_values")
        past = None
        out_ids: list[int] = []
        for _ in range(max_new_tokens):
            check_cancel(should_cancel)
            out = model(use_cache=True, **fixed, **{ids_key: cur, cache_key: past})
            past = getattr(out, cache_key, None)
            nxt = int(out.logits[0, -1].argmax())
            out_ids.append(nxt)
            if on_token is not None:
                on_token(nxt)
            if (stop and nxt in stop) or (stop_when is not None and stop_when(out_ids)):
                break
            step = torch.tensor([[nxt]], device=device)
            # a model that returns no cache (RecurrentGemma keeps its state in its modules and starts
            # afresh on a call without one) gets the whole sequence again
            cur = step if past is not None else torch.cat((cur, step), dim=1)
        return out_ids
    finally:
        model.train(was_training)


def resolve_answer_ids(
    model: nn.Module,
    tokenizer,
    prompt_ids: Sequence[int],
    *,
    target: str | None,
    generate: int | None,
    limit: int | None,
    timings: dict[str, float],
    on_token: Callable[[int], None] | None = None,
    should_cancel: ShouldCancel | None = None,
) -> list[int]:
    """The tokens to explain: those of ``target`` (a forced continuation), else a greedy
    generation of up to ``generate`` tokens (default 20) after ``prompt_ids``, refused
    when prompt + answer would exceed ``limit`` tokens. Records ``timings["generate"]``."""
    if target is not None:
        if not target:
            raise InputError("the target is empty; pass the text to explain with --target")
        check_text("target", target)
        return [int(i) for i in tokenizer(target, add_special_tokens=False)["input_ids"]]
    n_new = 20 if generate is None else int(generate)
    if n_new < 1:
        raise InputError("--generate must be at least 1")
    if limit is not None and len(prompt_ids) + n_new > limit:
        too_long(len(prompt_ids) + n_new, limit)
    t0 = time.perf_counter()
    ids = generate_greedy(
        model, prompt_ids, n_new, stop_ids(model, tokenizer), on_token=on_token, should_cancel=should_cancel
    )
    timings["generate"] = time.perf_counter() - t0
    return ids


def too_long(n: int, limit: int) -> None:
    raise InputError(f"the input has {n} tokens but the model's context is {limit}; shorten the prompt or --generate")


__all__ = [
    "AnswerExplanation",
    "build_prompt_ids",
    "check_text",
    "checkpoint_name",
    "context_length",
    "decoder_start_id",
    "generate_greedy",
    "input_device",
    "resolve_answer_ids",
    "source_ids",
    "stop_ids",
    "token_strings",
    "too_long",
]
