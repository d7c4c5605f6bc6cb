"""Ready-made experiments built on interventions (each is a test on SmolLM2 and a README recipe).

1. :func:`attention_knockout`: cut the edges from the last token to the subject's tokens
   in every layer and see what happens to the answer's probability.
2. :func:`patch_last_token`: put the residual stream at the last position of one prompt
   (e.g. one with an instruction) into another prompt's last position, layer by layer.
3. :func:`overwrite_attribute`: patch the subject tokens' states of one fact prompt into
   another and watch the answer move toward the source fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lrp_llm.errors import InputError

from .edges import cut_edges
from .interventions import intervene, replace, run_with_cache
from .sites import site_map


def _ids(tokenizer, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=True)["input_ids"]]


def _answer_id(tokenizer, answer: str) -> int:
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputError(f"the answer '{answer}' gives no token")
    return int(ids[0])


@torch.no_grad()
def _last_probs(model: nn.Module, ids: Sequence[int], edits: Sequence = ()) -> torch.Tensor:
    from lrp_llm.engines.generation import input_device

    with intervene(model, *edits):
        logits = model(input_ids=torch.tensor([list(ids)], device=input_device(model)), logits_to_keep=1).logits
    return torch.softmax(logits[0, -1].double(), -1).cpu()


def find_span(tokenizer, text: str, part: str) -> list[int]:
    """Token positions (of ``tokenizer(text)`` with special tokens) that overlap ``part``'s first occurrence."""
    start = text.find(part)
    if start < 0:
        raise InputError(f"'{part}' does not occur in '{text}'")
    end = start + len(part)
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    out = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start]
    if not out:
        raise InputError(f"no token of '{text}' covers '{part}'")
    return out


@dataclass
class KnockoutResult:
    tokens: list[str]
    subject_positions: list[int]
    layers: list[int]
    answer: str
    p_before: float
    p_after: float

    @property
    def drop(self) -> float:
        """Relative drop of the answer's probability (1 = gone)."""
        return 1.0 - self.p_after / self.p_before if self.p_before > 0 else float("nan")


def attention_knockout(
    model: nn.Module,
    tokenizer,
    prompt: str,
    subject: str,
    answer: str,
    *,
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    renormalize: bool = True,
) -> KnockoutResult:
    """Cut every head's edges from the last token to ``subject``'s tokens (or ``positions``) in ``layers``."""
    from lrp_llm.engines.generation import token_strings

    ids = _ids(tokenizer, prompt)
    span = list(positions) if positions is not None else find_span(tokenizer, prompt, subject)
    # every layer with attention (hybrids: not every block has it)
    layer_list = site_map(model).layers_with("attn") if layers is None else [int(i) for i in layers]
    aid = _answer_id(tokenizer, answer)
    before = float(_last_probs(model, ids)[aid])
    after = float(_last_probs(model, ids, cut_edges(layer_list, queries=[-1], keys=span, renormalize=renormalize))[aid])
    return KnockoutResult(token_strings(tokenizer, ids), span, layer_list, tokenizer.decode([aid]), before, after)


@dataclass
class LastTokenPatch:
    """Per layer: the top token of the patched target prompt and the probability of the source's answer."""

    source_answer: str
    target_answer: str
    layers: list[int] = field(default_factory=list)
    top_tokens: list[str] = field(default_factory=list)
    p_source_answer: list[float] = field(default_factory=list)
    p_target_answer: list[float] = field(default_factory=list)

    def first_layer_taking_over(self) -> int | None:
        """The lowest layer from which on the patched prompt answers like the source."""
        for k in range(len(self.layers)):
            if all(t == self.source_answer for t in self.top_tokens[k:]):
                return self.layers[k]
        return None


def patch_last_token(
    model: nn.Module, tokenizer, source: str, target: str, *, layers: Sequence[int] | None = None
) -> LastTokenPatch:
    """Patch ``layer.{i}.resid`` at the last position of ``source`` into ``target``'s last position."""
    s_ids, t_ids = _ids(tokenizer, source), _ids(tokenizer, target)
    s_probs, t_probs = _last_probs(model, s_ids), _last_probs(model, t_ids)
    sid, tid = int(s_probs.argmax()), int(t_probs.argmax())
    _, cache = run_with_cache(model, s_ids, "resid")
    out = LastTokenPatch(tokenizer.decode([sid]), tokenizer.decode([tid]))
    for i in range(site_map(model).n_layers) if layers is None else layers:
        p = _last_probs(model, t_ids, [replace(f"layer.{i}.resid", cache, positions=[-1], source_positions=[-1])])
        out.layers.append(int(i))
        out.top_tokens.append(tokenizer.decode([int(p.argmax())]))
        out.p_source_answer.append(float(p[sid]))
        out.p_target_answer.append(float(p[tid]))
    return out


@dataclass
class AttributeOverwrite:
    source_answer: str
    target_answer: str
    subject_positions: list[int]
    layer: int
    logit_diff_before: float  # target run: logit(source answer) - logit(target answer)
    logit_diff_after: float
    top_before: str
    top_after: str


def overwrite_attribute(
    model: nn.Module,
    tokenizer,
    source: str,
    target: str,
    source_subject: str,
    target_subject: str,
    source_answer: str,
    target_answer: str,
    *,
    layer: int = 4,
) -> AttributeOverwrite:
    """Patch ``layer.{layer}.resid`` at the subject tokens of ``source`` into ``target``'s subject tokens.

    The subjects must span the same number of tokens (positions are matched in order).
    """
    s_ids, t_ids = _ids(tokenizer, source), _ids(tokenizer, target)
    s_span = find_span(tokenizer, source, source_subject)
    t_span = find_span(tokenizer, target, target_subject)
    if len(s_span) != len(t_span):
        raise InputError(
            f"the subjects span {len(s_span)} and {len(t_span)} tokens; pick subjects of the same token length"
        )
    sa, ta = _answer_id(tokenizer, source_answer), _answer_id(tokenizer, target_answer)
    _, cache = run_with_cache(model, s_ids, [f"layer.{layer}.resid"])
    edit = replace(f"layer.{layer}.resid", cache, positions=t_span, source_positions=s_span)

    def ld(p: torch.Tensor) -> float:
        return float(torch.log(p[sa]) - torch.log(p[ta]))  # = logit difference

    before, after = _last_probs(model, t_ids), _last_probs(model, t_ids, [edit])
    return AttributeOverwrite(
        tokenizer.decode([sa]),
        tokenizer.decode([ta]),
        t_span,
        layer,
        ld(before),
        ld(after),
        tokenizer.decode([int(before.argmax())]),
        tokenizer.decode([int(after.argmax())]),
    )
