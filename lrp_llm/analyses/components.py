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
The experts of a MoE block are several tensors (each routed expert's weighted contribution,
over the tokens routed to it, and the shared expert's output): a selection of experts of one
layer masks whole tensors, and their masked cotangents run back together in one batched pass.
What holds exactly (float64, no biases, a conserving rule set such as CP-LRP or MambaLRP):
the heatmaps of the parts of a partition of ``h`` (all its heads, all its neurons; all experts
of a MoE block with its shared expert, against the block's output) add up to
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

from lrp_llm.archs.experts import observed_contributions
from lrp_llm.archs.sites import EXPERT_KINDS, INDEXED_KINDS, Location, Site, SiteMap
from lrp_llm.engines import causal_lm
from lrp_llm.errors import InputError
from lrp_llm.mechanism.components import in_place_parts, site_map_for_components, tapped
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
    """The tensor a site is a part of: (kind of tensor, layer); a MoE block's experts: ("moe", layer)."""
    return ("moe", site.layer) if site.kind in EXPERT_KINDS else (site.kind, site.layer)


class _SelectionTaps(Taps):
    """Taps on the selected tensors; on the (one) target's gradients, the masked backward passes."""

    retain_graph = True  # the masked backward passes run through the same graph

    def __init__(self, groups: dict[tuple[str, int], list[tuple[int, list[Site]]]], sites: SiteMap) -> None:
        super().__init__()
        self.groups = groups
        self.sites = sites
        self.keys: list[tuple] = []  # (kind, layer), or ("moe", layer, expert number or "shared")
        self.out: dict[int, tuple[torch.Tensor, float]] = {}

    @contextmanager
    def installed(self, model: nn.Module) -> Iterator[_SelectionTaps]:
        places: dict[Hashable, Location] = {}
        experts_layer: dict[nn.Module, int] = {}
        for kind, layer in self.groups:
            if kind == "moe":  # every expert's contribution, and the shared expert's output where there is one
                experts_layer[self.sites.module(layer, "expert")] = layer
                if self.sites.has(layer, "shared_expert"):
                    places[("moe", layer, "shared")] = Location(self.sites.module(layer, "shared_expert"), "output")
                gate = self.sites.shared_gate(layer)
                if gate is not None:  # the gate's share of the gated shared expert's relevance runs back from here
                    places[("moe", layer, "shared_gate")] = Location(gate, "output")
                continue
            loc = self.sites.locate(Site(layer, kind, 0 if kind in INDEXED_KINDS else None))
            places[(kind, layer)] = Location(loc.module, loc.where)  # the whole tensor; masks select

        def observe(module: nn.Module, expert: int, contribution: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                return contribution
            view = contribution.view_as(contribution)
            self._record(("moe", experts_layer[module], expert), view)
            return view

        with tapped(places, self._record, in_place_parts(self.sites, places)):
            with observed_contributions(list(experts_layer), observe):
                yield self

    def _record(self, key: Hashable, view: torch.Tensor) -> None:
        if not view.requires_grad:  # a shared expert's gate held constant (CP-LRP): no share runs back through it
            return
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
        moe: dict[int, list[tuple[int | str, torch.Tensor, torch.Tensor | None]]] = {}
        for key, h, g in zip(self.keys, self.tensors, grads):
            if key[0] == "moe":
                moe.setdefault(key[1], []).append((key[2], h, g))
                continue
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
        for kind, layer in self.groups:
            if kind == "moe":
                self._experts_done(self.groups[(kind, layer)], moe.get(layer, []), x, acc)

    def _experts_done(
        self,
        chosen: list[tuple[int, list[Site]]],
        tensors: list[tuple[int | str, torch.Tensor, torch.Tensor | None]],
        x: torch.Tensor,
        acc: torch.dtype,
    ) -> None:
        """The selections of one MoE block: each selects whole tensors (experts' contributions, the shared expert's
        output); the masked cotangents of all of them run back in one batched pass."""
        reached = [(which, h, g) for which, h, g in tensors if g is not None]
        picks = [{"shared" if s.kind == "shared_expert" else int(s.index) for s in sites} for _, sites in chosen]
        if not reached:
            for k, _ in chosen:
                self.out[k] = (torch.zeros(x.shape[1], dtype=acc), 0.0)
            return
        outputs, cotangents, selected = [], [], torch.zeros(len(chosen), dtype=acc)
        for which, h, g in reached:
            # the shared expert's gate goes with the shared expert; its relevance is the gate's, not the selection's
            part = "shared" if which == "shared_gate" else which
            on = torch.tensor([part in p for p in picks], dtype=g.dtype, device=g.device)  # (m,)
            cot = g[0].unsqueeze(0) * on.view(-1, *([1] * h.dim()))  # (m, *h.shape)
            outputs.append(h)
            cotangents.append(cot)
            if which != "shared_gate":
                selected += (h.detach().to(acc).unsqueeze(0) * cot.to(acc)).flatten(1).sum(-1).cpu()
        (gx,) = propagate(outputs, [x], cotangents)
        if gx is None:
            rel = torch.zeros(len(chosen), x.shape[1], dtype=acc)
        else:
            rel = (x.detach().to(acc) * gx.to(acc)).sum(-1)[:, 0]  # (m, seq)
        for j, (k, _) in enumerate(chosen):
            self.out[k] = (rel[j].cpu(), float(selected[j]))


def component_sites(model: nn.Module, components, name: str) -> list[str]:
    """The site names a listed component stands for (one selection): ``[name]``, or for a Mamba-2 SSM head
    (``layer.{i}.mixer.ssm_head.{h}``, ranked in ``components``, a ComponentRelevance) its channels."""
    from lrp_llm.results.components import SSM_HEAD, ssm_head_channels

    if not SSM_HEAD.match(name):
        return [name]
    n_heads = 0 if components is None or components.ssm_heads is None else components.ssm_heads.shape[1]
    return ssm_head_channels(name, site_map_for_components(model).n_channels, n_heads)


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
    (``["layer.3.attn.head.0", "layer.3.attn.head.2"]``; experts of one MoE block:
    ``["layer.1.mlp.expert.0", "layer.1.mlp.shared_expert"]``). Returns the unconditional input
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
                "a selection holds heads of one layer, neurons of one layer, experts of one layer, or one whole part"
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
