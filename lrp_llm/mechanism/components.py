"""Component relevance: taps on the model's parts whose gradients come with the input relevance.

A tap replaces a part's tensor ``h`` in the forward pass by an identity view of it (a
forward hook on the part's output, a pre-hook on the projection that reads heads or
neurons) and registers the view with the gradient engine (:class:`~lrp_llm.mechanism.gradients.Taps`):
its gradient comes out of the same backward passes as the input embeddings', so the
relevance ``h * dtarget/dh`` of every tapped part costs no extra backward pass. Under an
LRP rule set (gradient x input form) that is the part's LRP relevance. Where the parts are
comes from :class:`lrp_llm.archs.sites.SiteMap` (the family's ``BlockPaths``); each backward
chunk is reduced at once (totals, per head, the top-k neurons), so no (targets x seq x d_mlp)
tensor is kept.

The hooks live for one ``with`` block (:func:`tapped`) and are removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lrp_llm.archs.experts import observed_contributions
from lrp_llm.archs.sites import Location, SiteMap
from lrp_llm.errors import InputError, UnsupportedModelError
from lrp_llm.mechanism.gradients import Taps
from lrp_llm.results.components import ComponentRelevance


@dataclass(frozen=True)
class ComponentSpec:
    """What component relevance keeps per explained token.

    ``top_k``: neurons kept per layer (by |relevance|); ``full``: also every neuron
    (n_layers, d_mlp) and every head per position (n_layers, n_heads, seq).
    """

    top_k: int = 16
    full: bool = False

    def __post_init__(self) -> None:
        if int(self.top_k) < 1:
            raise InputError(f"top_k must be at least 1, not {self.top_k}")

    @classmethod
    def of(cls, value: bool | ComponentSpec | None) -> ComponentSpec | None:
        """``True`` -> the defaults, ``False``/None -> None (no components), a spec as it is."""
        if isinstance(value, ComponentSpec):
            return value
        return cls() if value else None


def first_output(output: Any) -> torch.Tensor:
    """A module's main tensor: the first item of a tuple/list output, else the output itself."""
    return output[0] if isinstance(output, (tuple, list)) else output


def with_first_output(output: Any, new: torch.Tensor) -> Any:
    """``output`` with its main tensor (see :func:`first_output`) replaced by ``new``."""
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    return new


@contextmanager
def tapped(
    places: Mapping[Hashable, Location],
    record: Callable[[Hashable, torch.Tensor], None],
    copy: Collection[Hashable] = (),
) -> Iterator[None]:
    """For one ``with`` block, each place's tensor (its module's whole output or input; a
    Location's slice is the caller's to take) is replaced in the forward pass by an identity
    view, given to ``record(key, view)``; only while gradients are enabled. The outputs of the
    places in ``copy`` go on as a copy of the view, so a block that changes them in place
    (Falcon) changes the copy, and the view keeps the part's value and its gradient. Every hook is
    removed on leaving, also on error."""
    handles = []
    try:
        for key, loc in places.items():
            if loc.where == "output":

                def hook(module, args, output, key=key):
                    if not torch.is_grad_enabled():
                        return None
                    h = first_output(output)
                    view = h.view_as(h)
                    record(key, view)
                    return with_first_output(output, view.clone() if key in copy else view)

                handles.append(loc.module.register_forward_hook(hook))
            else:

                def pre_hook(module, args, key=key):
                    if not torch.is_grad_enabled() or not args:
                        return None
                    view = args[0].view_as(args[0])
                    record(key, view)
                    return (view, *args[1:])

                handles.append(loc.module.register_forward_pre_hook(pre_hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def site_map_for_components(model: nn.Module) -> SiteMap:
    """The model's :class:`SiteMap`; a family without block paths is a one-line error."""
    try:
        return SiteMap(model)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"component relevance needs the model's block layout: {exc}") from None


def in_place_parts(sites: SiteMap, places: Mapping[Hashable, Location]) -> set[Hashable]:
    """The places whose outputs the blocks change in place (``BlockPaths.outputs_changed_in_place``): the part
    outputs (not the block outputs), which :func:`tapped` then hands on as copies."""
    if not sites.blocks.outputs_changed_in_place:
        return set()
    layers = {id(layer) for layer in sites.layers}
    return {k for k, loc in places.items() if loc.where == "output" and id(loc.module) not in layers}


class ComponentRecorder(Taps):
    """Taps on every block output, attention / MLP / mixer output, head, neuron, mixer channel, routed expert's
    weighted contribution and shared expert of one model,
    reduced per backward chunk into the arrays of :class:`ComponentRelevance` for ``n_targets`` targets.

    Use: ``with recorder.installed(model):`` around the gradient engine's call (with
    ``taps=recorder``); then :meth:`result` per target.
    """

    def __init__(self, spec: ComponentSpec, n_targets: int, seq: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.spec = spec
        self.n = n_targets
        self.seq = seq
        self.acc = torch.float64 if dtype == torch.float64 else torch.float32
        self.keys: list[tuple] = []  # (kind, layer) or ("expert", layer, expert)
        self.sites: SiteMap | None = None

    @contextmanager
    def installed(self, model: nn.Module) -> Iterator[ComponentRecorder]:
        sites = site_map_for_components(model)
        self.sites = sites
        n, L, acc = self.n, sites.n_layers, self.acc
        nan = float("nan")
        self.trace = torch.zeros(n, L + 1, self.seq, dtype=acc)
        self.part = {k: torch.full((n, L), nan, dtype=acc) for k in ("attn", "mlp", "mixer")}
        self.heads = torch.full((n, L, sites.n_heads), nan, dtype=acc) if "head" in sites.kinds else None
        self.head_positions = (
            torch.zeros(n, L, sites.n_heads, self.seq, dtype=acc) if self.heads is not None and self.spec.full else None
        )
        # neurons (down_proj's input) and mixer channels (out_proj's input): totals, top-k, all on request
        self.indexed: dict[str, dict[str, torch.Tensor]] = {}
        for kind in ("neuron", "channel"):
            if kind in sites.kinds:
                width = sites.count(kind)
                k = min(int(self.spec.top_k), width)
                arrays = {
                    "total": torch.full((n, L), nan, dtype=acc),
                    "index": torch.full((n, L, k), -1, dtype=torch.int64),
                    "value": torch.full((n, L, k), nan, dtype=acc),
                }
                arrays["total"][:, sites.layers_with(kind)] = 0.0
                if self.spec.full:
                    arrays["all"] = torch.full((n, L, width), nan, dtype=acc)
                self.indexed[kind] = arrays
        # Mamba-2: the channels are SSM heads of head_dim each (per-head totals)
        self.ssm_shape: tuple[int, int] | None = None
        if "channel" in sites.kinds:
            mixer = sites.module(sites.layers_with("channel")[0], "mixer")
            heads, dim = getattr(mixer, "num_heads", None), getattr(mixer, "head_dim", None)
            if isinstance(heads, int) and isinstance(dim, int) and heads * dim == sites.n_channels:
                self.ssm_shape = (heads, dim)
        self.ssm_heads = None if self.ssm_shape is None else torch.full((n, L, self.ssm_shape[0]), nan, dtype=acc)
        # MoE blocks: per routed expert (its weighted contribution, tapped inside the experts' forward) and the
        # shared expert (its module's output); present blocks start at 0, others stay NaN
        self.experts = torch.full((n, L, sites.n_experts), nan, dtype=acc) if "expert" in sites.kinds else None
        self.shared = torch.full((n, L), nan, dtype=acc) if "shared_expert" in sites.kinds else None
        experts_layer: dict[nn.Module, int] = {}
        if self.experts is not None:
            self.experts[:, sites.layers_with("expert")] = 0.0
            experts_layer = {sites.module(i, "expert"): i for i in sites.layers_with("expert")}
        if self.shared is not None:
            self.shared[:, sites.layers_with("shared_expert")] = 0.0
        # the parts of every block: output tensors of the block and of its parts, the heads' and neurons' projections
        places: dict[Hashable, Location] = {}
        for i in range(L):
            places[("resid", i)] = Location(sites.layers[i], "output")
            for kind in ("attn", "mlp", "mixer", "head", "neuron", "channel", "shared_expert"):
                if sites.has(i, kind):
                    module = sites.module(i, kind)
                    places[(kind, i)] = Location(module, "input" if kind in ("head", "neuron", "channel") else "output")
        for kind in ("attn", "mlp", "mixer"):  # a block's present parts start at 0, absent stay NaN
            for i in sites.layers_with(kind):
                self.part[kind][:, i] = 0.0
        if self.heads is not None:
            self.heads[:, sites.layers_with("head")] = 0.0
        self.tensors, self._versions, self.keys = [], [], []

        def observe(module: nn.Module, expert: int, contribution: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                return contribution
            view = contribution.view_as(contribution)
            self._record(("expert", experts_layer[module], expert), view)
            return view

        copy = in_place_parts(sites, places)
        with tapped(places, self._record, copy), observed_contributions(list(experts_layer), observe):
            yield self

    def _record(self, key: Hashable, view: torch.Tensor) -> None:
        self.keys.append(key)  # type: ignore[arg-type]
        self.add(view)

    def done(self, first: int, grads: Sequence[torch.Tensor | None], inputs: Sequence[torch.Tensor]) -> None:
        sites = self.sites
        assert sites is not None
        seen: dict[tuple[str, int], torch.Tensor] = {}
        for key, h, g in zip(self.keys, self.tensors, grads):
            if g is None:
                continue  # not reached by the targets: zero relevance (the arrays start at zero)
            kind, i = key[0], key[1]
            b = g.shape[0]
            rows = slice(first, first + b)
            if kind in ("expert", "shared_expert"):  # (tokens routed, hidden) or the shared expert's own shape
                total = (h.detach().to(self.acc).unsqueeze(0) * g.to(self.acc)).flatten(1).sum(-1).cpu()
                if kind == "expert":
                    assert self.experts is not None
                    self.experts[rows, i, key[2]] += total
                else:
                    assert self.shared is not None
                    self.shared[rows, i] += total
                continue
            r = h.detach().to(self.acc)[0] * g.to(self.acc)[:, 0]  # (b, seq, width): relevance per element
            if kind == "resid":
                self.trace[rows, i + 1] += r.sum(-1).cpu()
            elif kind in ("attn", "mlp", "mixer"):
                self.part[kind][rows, i] += r.sum((1, 2)).cpu()
            elif kind == "head":
                per = r[..., : sites.n_heads * sites.head_dim].unflatten(-1, (sites.n_heads, sites.head_dim)).sum(-1)
                assert self.heads is not None
                self.heads[rows, i] += per.sum(1).cpu()  # (b, n_heads)
                if self.head_positions is not None:
                    self.head_positions[rows, i] += per.transpose(1, 2).cpu()  # (b, n_heads, seq)
            elif kind in self.indexed:
                per = r.sum(1)  # (b, width): per neuron / channel, summed over positions
                seen[kind, i] = seen[kind, i] + per if (kind, i) in seen else per
        for (kind, i), per in seen.items():
            per = per.cpu()
            arrays = self.indexed[kind]
            rows = slice(first, first + per.shape[0])
            arrays["total"][rows, i] = per.sum(-1)
            index = per.abs().topk(arrays["index"].shape[-1], dim=-1, sorted=True).indices
            arrays["index"][rows, i] = index
            arrays["value"][rows, i] = per.gather(-1, index)
            if "all" in arrays:
                arrays["all"][rows, i] = per
            if kind == "channel" and self.ssm_heads is not None and self.ssm_shape is not None:
                self.ssm_heads[rows, i] = per.unflatten(-1, self.ssm_shape).sum(-1)

    def result(self, j: int, position: int, input_relevance: torch.Tensor | np.ndarray) -> ComponentRelevance:
        """The components of target ``j`` (at ``position``); ``input_relevance`` (>= position,) is trace row 0."""
        p = int(position)
        trace = self.trace[j, :, :p].clone()
        trace[0] = torch.as_tensor(np.asarray(input_relevance)[:p], dtype=self.acc)

        def totals(values: torch.Tensor) -> list[float | None]:
            return [None if v != v else float(v) for v in values.tolist()]

        def arr(t: torch.Tensor | None) -> np.ndarray | None:
            return None if t is None else t[j].numpy().copy()

        def part(kind: str, name: str) -> Any:
            arrays = self.indexed.get(kind)
            if arrays is None or name not in arrays:
                return None
            return totals(arrays[name][j]) if name == "total" else arr(arrays[name])

        return ComponentRelevance(
            trace=trace.numpy(),
            attn=totals(self.part["attn"][j]),
            mlp=totals(self.part["mlp"][j]),
            mixer=totals(self.part["mixer"][j]),
            heads=arr(self.heads),
            neuron_total=part("neuron", "total"),
            neuron_index=part("neuron", "index"),
            neuron_value=part("neuron", "value"),
            head_positions=None if self.head_positions is None else self.head_positions[j, :, :, :p].numpy().copy(),
            neurons=part("neuron", "all"),
            channel_total=part("channel", "total"),
            channel_index=part("channel", "index"),
            channel_value=part("channel", "value"),
            channels=part("channel", "all"),
            ssm_heads=arr(self.ssm_heads),
            experts=arr(self.experts),
            shared_expert=None if self.shared is None else totals(self.shared[j]),
            dtype="float64" if self.acc == torch.float64 else "float32",
        )


__all__ = [
    "ComponentRecorder",
    "ComponentSpec",
    "first_output",
    "in_place_parts",
    "site_map_for_components",
    "tapped",
    "with_first_output",
]
