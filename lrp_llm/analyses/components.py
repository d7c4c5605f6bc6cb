"""Conditional heatmaps (Concept Relevance Propagation, Achtibat et al., Nature Machine Intelligence 2023):
which input tokens a chosen component used for one token.

For the target logit ``y`` at ``position``, a tensor ``h`` of the model (a block output, an
attention / MLP / mixer output, the heads at the output projection's input, the neurons at
the down projection's input, Mamba channels at the mixer's ``out_proj`` input) and a selection ``S`` of its parts (a mask ``M`` over ``h``'s
last axis: head slices, neuron columns, or all of it), the relevance of ``y`` that flows
through ``S`` is

    R(x | S) = sum_d x[., d] * (J~_{h<-x}^T (M * g))[., d],    g = d~y/dh,

where ``d~`` and ``J~`` are the gradients under the method's rules (gradient x input form,
``docs/design.md``): the relevance of ``y`` at ``h`` restricted to ``S`` (``M * h * g``,
summed over positions), propagated back to the input embeddings ``x`` by the same rules.
What holds exactly (float64, no biases, a conserving rule set such as CP-LRP or MambaLRP):
the heatmaps of the parts of a partition of ``h`` (all its heads, all its neurons) add up to
that of the whole ``h``; that of a whole block output is the unconditional input relevance
(every path from the input to ``y`` passes through it); and each heatmap sums to the
selection's relevance at ``h``. The rules are linear in the cotangent, so the first holds
under any rule set.

Cost: one forward and one backward pass for ``g`` (the engine of
:mod:`lrp_llm.mechanism.gradients`, which also gives the unconditional heatmap), then one
batched backward pass per tapped tensor for all its selections (``is_grads_batched``).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lrp_llm.archs.sites import INDEXED_KINDS, Location, Site, SiteMap
from lrp_llm.engines import causal_lm
from lrp_llm.errors import InputError
from lrp_llm.mechanism.components import site_map_for_components, tapped
from lrp_llm.mechanism.gradients import Taps, propagate

Selection = str | Sequence[str]


@dataclass
class ConditionalHeatmap:
    """The input relevance that flows through one selection of components (site names of one tensor).

    ``relevance`` (position,): per input token; ``selected``: the relevance of the selection at its
    tensor (``M * h * g`` summed), which ``relevance`` sums to where the rules conserve."""

    sites: tuple[str, ...]
    relevance: np.ndarray
    selected: float

    def to_dict(self) -> dict[str, object]:
        return {"sites": list(self.sites), "relevance": self.relevance.tolist(), "selected": self.selected}


@dataclass
class ConditionalRelevance:
    """Conditional heatmaps of one target token: ``heatmaps[k]`` for ``selections[k]``; ``relevance`` the
    unconditional input relevance (position,); ``logit`` the explained logit."""

    position: int
    token_id: int
    logit: float
    relevance: np.ndarray
    heatmaps: list[ConditionalHeatmap]

    def to_dict(self) -> dict[str, object]:
        return {
            "position": self.position,
            "id": self.token_id,
            "logit": self.logit,
            "relevance": self.relevance.tolist(),
            "heatmaps": [h.to_dict() for h in self.heatmaps],
        }


def _tensor_of(site: Site) -> tuple[str, int]:
    """The tensor a site is a part of: (kind of tensor, layer)."""
    return (site.kind, site.layer)


class _SelectionTaps(Taps):
    """Taps on the selected tensors; on the (one) target's gradients, the masked backward passes."""

    retain_graph = True  # the masked backward passes run through the same graph

    def __init__(self, groups: dict[tuple[str, int], list[tuple[int, list[Site]]]], sites: SiteMap) -> None:
        super().__init__()
        self.groups = groups
        self.sites = sites
        self.keys: list[tuple[str, int]] = []
        self.out: dict[int, tuple[torch.Tensor, float]] = {}

    @contextmanager
    def installed(self, model: nn.Module) -> Iterator[_SelectionTaps]:
        places: dict[Hashable, Location] = {}
        for kind, layer in self.groups:
            loc = self.sites.locate(Site(layer, kind, 0 if kind in INDEXED_KINDS else None))
            places[(kind, layer)] = Location(loc.module, loc.where)  # the whole tensor; masks select
        with tapped(places, self._record):
            yield self

    def _record(self, key: Hashable, view: torch.Tensor) -> None:
        self.keys.append(key)  # type: ignore[arg-type]
        self.add(view)

    def _mask(self, sites: list[Site], width: int, like: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(width, dtype=like.dtype, device=like.device)
        for s in sites:
            if s.kind == "head":
                start = int(s.index) * self.sites.head_dim
                mask[start : start + self.sites.head_dim] = 1
            elif s.kind in ("neuron", "channel"):
                mask[int(s.index)] = 1
            else:
                mask[:] = 1
        return mask

    def done(self, first: int, grads: Sequence[torch.Tensor | None], inputs: Sequence[torch.Tensor]) -> None:
        x = inputs[0]
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        for key, h, g in zip(self.keys, self.tensors, grads):
            chosen = self.groups[key]
            if g is None:  # the target does not depend on this tensor
                for k, _ in chosen:
                    self.out[k] = (torch.zeros(x.shape[1], dtype=acc), 0.0)
                continue
            masks = torch.stack([self._mask(sites, h.shape[-1], g) for _, sites in chosen])  # (m, width)
            cotangents = g[0].unsqueeze(0) * masks.view(len(chosen), *([1] * (h.dim() - 1)), -1)  # (m, *h.shape)
            (gx,) = propagate(h, [x], cotangents)
            selected = (h.detach().to(acc) * cotangents.to(acc)).flatten(1).sum(-1)
            if gx is None:  # the tensor does not depend on the input (cannot happen in a causal LM; kept for safety)
                rel = torch.zeros(len(chosen), x.shape[1], dtype=acc)
            else:
                rel = (x.detach().to(acc) * gx.to(acc)).sum(-1)[:, 0]  # (m, seq)
            for j, (k, _) in enumerate(chosen):
                self.out[k] = (rel[j].cpu(), float(selected[j]))


def conditional_relevance(
    model: nn.Module,
    input_ids: Sequence[int],
    position: int,
    selections: Sequence[Selection],
    *,
    method: str | None = None,
) -> ConditionalRelevance:
    """Conditional heatmaps of the token at ``position`` (predicted from ``position - 1``), one per selection.

    Each selection is one site name (``"layer.3.mlp"``, ``"layer.5.mlp.neuron.17"``,
    ``"layer.2.attn.head.1"``, ``"layer.4.resid"``) or a list of site names of the same tensor
    (``["layer.3.attn.head.0", "layer.3.attn.head.2"]``). Returns the unconditional input
    relevance and, per selection, the relevance that flows through it (the module docstring
    defines it). ``method``: a gradient x input method (default: the family's). Selections of
    the same tensor share one batched backward pass.
    """
    if isinstance(selections, str):
        selections = [selections]
    if not selections:
        raise InputError("no selection: name at least one component, e.g. layer.0.mlp")
    sites = site_map_for_components(model)
    groups: dict[tuple[str, int], list[tuple[int, list[Site]]]] = {}
    for k, selection in enumerate(selections):
        names = [selection] if isinstance(selection, str) else list(selection)
        if not names:
            raise InputError(f"selection {k} is empty; name at least one component")
        parsed = [sites.check(name) for name in names]
        tensors = {_tensor_of(s) for s in parsed}
        if len(tensors) != 1:
            raise InputError(
                f"selection {k} ({', '.join(s.name for s in parsed)}) names parts of different tensors; "
                "a selection holds heads of one layer, neurons of one layer, or one whole part"
            )
        groups.setdefault(tensors.pop(), []).append((k, parsed))
    taps = _SelectionTaps(groups, sites)
    out = causal_lm.relevance(model, input_ids, [int(position)], method=method, components=taps)
    p = int(position)
    heatmaps = []
    for k, selection in enumerate(selections):
        rel, selected = taps.out[k]
        names = (selection,) if isinstance(selection, str) else tuple(selection)
        heatmaps.append(ConditionalHeatmap(tuple(names), rel[:p].numpy(), selected))
    relevance = out["relevance"]
    return ConditionalRelevance(
        position=p,
        token_id=int(input_ids[p]),
        logit=float(out["logits"][0]),  # type: ignore[index]
        relevance=relevance[0, :p].numpy(),  # type: ignore[index]
        heatmaps=heatmaps,
    )


__all__ = ["ConditionalHeatmap", "ConditionalRelevance", "Selection", "conditional_relevance"]
