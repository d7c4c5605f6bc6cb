"""Ablate components and see the answer change: the logit and probability of the answer token
before and after, and the new greedy answer with the ablation in place.

Components are site names (:mod:`lrp_llm.archs.sites`): heads ``layer.3.attn.head.2``, neurons
``layer.5.mlp.neuron.17``, Mamba channels ``layer.1.mixer.channel.40``, or whole parts
(``layer.2.mlp``). Ablation runs through the interventions of :mod:`patching.interventions`:

- ``how="zero"``: the component's tensor becomes 0 at every position;
- ``how="mean"``: it becomes its mean over the positions of the prompt (computed once from a
  clean run of the prompt, so it stays the same vector while new tokens are generated).

The model is left as it was (every hook removed), also on error. The core (``lrp_llm``) never
imports :mod:`patching`; the app calls this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lrp_llm.errors import InputError

from .interventions import Intervention, _ids_tensor, intervene, mean_ablate, run_with_cache, zero
from .sites import Site, SiteMap, site_map

HOWS = ("zero", "mean")


@dataclass
class AblationResult:
    """The answer token's logit and probability (at the prompt's last position) before and after
    ablating ``sites``, and the greedy continuation of the prompt before and after."""

    sites: tuple[str, ...]
    how: str
    answer_id: int
    logit_before: float
    logit_after: float
    probability_before: float
    probability_after: float
    answer_before: list[int]
    answer_after: list[int]
    answer_text: str | None = None  # the answer token as text (with a tokenizer)
    text_before: str | None = None
    text_after: str | None = None

    @property
    def probability_drop(self) -> float:
        return self.probability_before - self.probability_after

    def to_dict(self) -> dict[str, Any]:
        return {
            "sites": list(self.sites),
            "how": self.how,
            "answer_id": self.answer_id,
            "answer_text": self.answer_text,
            "logit": {"before": self.logit_before, "after": self.logit_after},
            "probability": {"before": self.probability_before, "after": self.probability_after},
            "greedy": {
                "before": list(self.answer_before),
                "after": list(self.answer_after),
                "text_before": self.text_before,
                "text_after": self.text_after,
            },
        }


def _check_how(how: str) -> None:
    if how not in HOWS:
        raise InputError(f"unknown ablation '{how}'; choose one of: {', '.join(HOWS)}")


def _checked(sm: SiteMap, sites: Sequence[str | Site] | str | Site) -> list[Site]:
    if isinstance(sites, (str, Site)):
        sites = [sites]
    checked = [sm.check(s) for s in sites]
    if not checked:
        raise InputError("nothing to ablate: name at least one component, e.g. layer.0.mlp.neuron.3")
    return list(dict.fromkeys(checked))  # each once, in order


def ablation_edits(
    sites: Sequence[Site],
    how: str = "zero",
    *,
    means: Mapping[str, torch.Tensor] | None = None,
    batch: Sequence[int] | None = None,
) -> list[Intervention]:
    """The interventions that ablate ``sites`` (checked :class:`Site` s) at every position of
    batch rows ``batch`` (None: all rows). ``how="mean"`` needs ``means[site.name]``: the value it takes."""
    _check_how(how)
    rows = None if batch is None else list(batch)
    if how == "zero":
        return [zero(s, batch=rows) for s in sites]
    if means is None:
        raise InputError("mean ablation needs the mean of each site (see prompt_means)")
    return [mean_ablate(s, means[s.name], batch=rows) for s in sites]


def prompt_means(model: nn.Module, input_ids: Any, sites: Sequence[Site]) -> dict[str, torch.Tensor]:
    """Each site's mean over the positions (and batch rows) of one clean run of ``input_ids``."""
    _, cache = run_with_cache(model, input_ids, list(sites))
    return {s.name: cache[s.name].reshape(-1, *cache[s.name].shape[2:]).mean(0) for s in sites}


def _last_logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1].detach().double().cpu()


def _prompt_ids(prompt: str | Sequence[int] | torch.Tensor, tokenizer: Any) -> list[int]:
    if isinstance(prompt, str):
        if tokenizer is None:
            raise InputError("a text prompt needs a tokenizer; pass tokenizer= or the token ids")
        if not prompt.strip():
            raise InputError("the prompt is empty")
        return [int(i) for i in tokenizer(prompt)["input_ids"]]
    ids = torch.as_tensor(prompt, dtype=torch.long).reshape(-1).tolist()
    if not ids:
        raise InputError("the prompt is empty")
    return [int(i) for i in ids]


def _answer_id(answer: int | str | None, tokenizer: Any, greedy: list[int]) -> int:
    if answer is None:
        return int(greedy[0])
    if isinstance(answer, str):
        if tokenizer is None:
            raise InputError("a text answer needs a tokenizer; pass tokenizer= or the answer's token id")
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not ids:
            raise InputError(f"the answer {answer!r} has no tokens")
        return int(ids[0])  # the answer's first token is the one predicted at the prompt's end
    return int(answer)


def ablate_components(
    model: nn.Module,
    prompt: str | Sequence[int] | torch.Tensor,
    sites: Sequence[str | Site] | str | Site,
    *,
    how: str = "zero",
    tokenizer: Any = None,
    answer: int | str | None = None,
    new_tokens: int = 4,
) -> AblationResult:
    """Ablate ``sites`` (zero or mean, see the module docstring) and compare the answer.

    ``prompt``: text (with ``tokenizer``) or token ids; ``answer``: the token whose logit and
    probability are compared (an id, or text whose first token counts), by default the model's
    own greedy next token. ``new_tokens``: how many tokens of greedy continuation to show before
    and after. Unknown sites, an unknown ``how`` and an empty prompt are one-line errors
    (:class:`~lrp_llm.errors.InputError`).
    """
    from lrp_llm.engines.generation import generate_greedy

    _check_how(how)
    if int(new_tokens) < 1:
        raise InputError("new_tokens must be at least 1")
    sm = site_map(model)
    checked = _checked(sm, sites)
    ids_list = _prompt_ids(prompt, tokenizer)
    if max(ids_list) >= model.get_input_embeddings().num_embeddings or min(ids_list) < 0:
        raise InputError("the prompt has token ids outside the model's vocabulary")
    ids = _ids_tensor(model, ids_list)
    logits_before = _last_logits(model, ids)
    greedy_before = generate_greedy(model, ids_list, int(new_tokens))
    answer_id = _answer_id(answer, tokenizer, greedy_before)
    if not 0 <= answer_id < logits_before.shape[-1]:
        raise InputError(f"answer token id {answer_id} is outside the vocabulary (0..{logits_before.shape[-1] - 1})")
    means = prompt_means(model, ids, checked) if how == "mean" else None
    with intervene(model, *ablation_edits(checked, how, means=means)):
        logits_after = _last_logits(model, ids)
        greedy_after = generate_greedy(model, ids_list, int(new_tokens))
    p_before = torch.softmax(logits_before, -1)[answer_id]
    p_after = torch.softmax(logits_after, -1)[answer_id]

    def text(t: list[int]) -> str | None:
        return None if tokenizer is None else tokenizer.decode(t)

    return AblationResult(
        sites=tuple(s.name for s in checked),
        how=how,
        answer_id=answer_id,
        logit_before=float(logits_before[answer_id]),
        logit_after=float(logits_after[answer_id]),
        probability_before=float(p_before),
        probability_after=float(p_after),
        answer_before=greedy_before,
        answer_after=greedy_after,
        answer_text=text([answer_id]),
        text_before=text(greedy_before),
        text_after=text(greedy_after),
    )


def ablated_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    sites_per_row: Sequence[Sequence[str | Site]],
    *,
    logits_to_keep: int = 1,
) -> torch.Tensor:
    """One batched forward pass in which row ``i`` of ``input_ids`` (batch, seq) runs with its own
    ``sites_per_row[i]`` zero-ablated; the logits of the last ``logits_to_keep`` positions.
    The interventions are grouped per site (one per site, over the rows that ablate it)."""
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    if ids.dim() != 2 or len(sites_per_row) != ids.shape[0]:
        raise InputError(f"{len(sites_per_row)} site lists for a batch of shape {tuple(ids.shape)}")
    sm = site_map(model)
    rows: dict[Site, list[int]] = {}
    for i, chosen in enumerate(sites_per_row):
        for s in dict.fromkeys(sm.check(x) for x in chosen):
            rows.setdefault(s, []).append(i)
    edits = [zero(s, batch=r) for s, r in rows.items()]
    with torch.no_grad(), intervene(model, *edits):
        return model(
            input_ids=ids.to(_ids_tensor(model, [0]).device), use_cache=False, logits_to_keep=logits_to_keep
        ).logits


def zero_ablation_estimate(
    model: nn.Module,
    input_ids: Sequence[int] | torch.Tensor,
    answer_id: int,
    kind: str = "neuron",
    *,
    rules: str | None = "relp",
) -> torch.Tensor:
    """Attribution patching of zero ablation: the predicted change of the answer logit (at the last
    position) when each component of ``kind`` ("neuron", "head", "channel") is set to 0 at every position,
    ``sum_pos (0 - a) . g`` with ``g`` the gradient of the logit at the component in the clean run; one
    forward and one backward pass for all components. ``rules``: "relp" (RelP: the gradient under LRP
    rules, :mod:`patching.relp`), None (plain attribution patching, AtP: then the estimate is minus
    gradient x activation), "attnlrp" or "cp-lrp". Returns (n_layers, width), NaN rows for blocks
    without the kind; the most negative entries are the components whose ablation is predicted to
    lower the answer most."""
    from lrp_llm.mechanism.patch import freeze_parameters

    from .relp import _record, backward_rules

    sm = site_map(model)
    if kind not in ("neuron", "head", "channel") or kind not in sm.kinds:
        have = ", ".join(k for k in ("neuron", "head", "channel") if k in sm.kinds)
        raise InputError(f"no '{kind}' components in this model; it has: {have}")
    ids = _ids_tensor(model, input_ids)
    targets = [(kind, i, sm.module(i, kind), "input") for i in sm.layers_with(kind)]
    got: dict = {}
    with backward_rules(model, rules) as patch:
        freeze_parameters(model, patch)
        _record(patch, targets, got)
        with torch.enable_grad():
            embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
            logit = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=1).logits[0, -1, int(answer_id)]
            keys = list(got)
            grads = torch.autograd.grad(logit, [got[k] for k in keys], allow_unused=True)
    width = sm.count(kind)
    out = torch.full((sm.n_layers, width), float("nan"), dtype=torch.float64)
    for (_, i), grad in zip(keys, grads):
        a = got[(kind, i)][0].detach().double()  # (T, width of the tensor)
        g = torch.zeros_like(a) if grad is None else grad[0].double()
        per = -(a * g)
        if kind == "head":
            per = per[..., : sm.n_heads * sm.head_dim].unflatten(-1, (sm.n_heads, sm.head_dim)).sum(-1)
        out[i] = per.sum(0)[:width].cpu()
    return out


__all__ = [
    "HOWS",
    "AblationResult",
    "ablate_components",
    "ablated_logits",
    "ablation_edits",
    "prompt_means",
    "zero_ablation_estimate",
]
