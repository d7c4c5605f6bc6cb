"""Interventions on named sites, and ``run_with_cache``.

An intervention changes one site's tensor during a forward pass; all of them work as a
``with`` block on one model instance (built on :class:`lrp_llm.mechanism.patch.ModelPatch`), and
leaving the block removes every hook, also when an exception is raised inside::

    logits, cache = run_with_cache(model, clean_ids, ["layer.*.resid"])
    with intervene(model, replace("layer.4.resid", cache, positions=[7])):
        patched = model(corrupted_ids).logits

Operations: ``replace`` (activation patching: the value of another run, position by
position), ``set_to`` (a fixed vector), ``add``, ``scale``, ``zero`` and ``mean_ablate``.
Positions index the tokens of the forward call (negative ones count from its end), so
``positions=[-1]`` follows the last token, also during generation with a KV cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lrp_llm.errors import InputError
from lrp_llm.mechanism.components import first_output as _first
from lrp_llm.mechanism.components import with_first_output as _with_first
from lrp_llm.mechanism.patch import ModelPatch

from .sites import EXPERT_KINDS, Location, Site, SiteMap, normalise_positions, site_map

OPS = ("replace", "set", "add", "scale", "zero", "mean")


@dataclass(frozen=True)
class Intervention:
    """Change ``site`` at ``positions`` (None: all) of batch rows ``batch`` (None: all).

    ``value``: for ``replace`` the source run's tensor in the site's shape (batch, pos, ...)
    read at ``source_positions`` (default: the same positions); for ``set``/``add``/``mean``
    a tensor broadcastable to (n_positions, width); for ``scale`` a number.
    """

    site: Site
    op: str
    value: Any = None
    positions: tuple[int, ...] | None = None
    source_positions: tuple[int, ...] | None = None
    batch: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise InputError(f"unknown operation '{self.op}'; choose one of: {', '.join(OPS)}")


def _tuple(x: Sequence[int] | int | None) -> tuple[int, ...] | None:
    if x is None:
        return None
    if isinstance(x, int):
        return (int(x),)
    return tuple(int(i) for i in x)


def _source_value(site: Site, source: Any) -> torch.Tensor:
    if isinstance(source, Mapping):
        if site.name not in source:
            raise InputError(f"the cache has no activation for '{site.name}'; capture it with run_with_cache")
        return source[site.name]
    if not isinstance(source, torch.Tensor):
        raise InputError("replace() takes an ActivationCache or a tensor of the site's shape")
    return source


def replace(
    site: str | Site,
    source: Any,
    *,
    positions: Sequence[int] | int | None = None,
    source_positions: Sequence[int] | int | None = None,
    batch: Sequence[int] | int | None = None,
) -> Intervention:
    """Activation patching: ``site`` takes the value it had in another run (``source``: an
    :class:`ActivationCache` or the tensor itself, shape (batch, pos, ...))."""
    s = Site.parse(site)
    return Intervention(
        s, "replace", _source_value(s, source), _tuple(positions), _tuple(source_positions), _tuple(batch)
    )


def set_to(site, value, *, positions=None, batch=None) -> Intervention:
    """``site`` becomes ``value`` (broadcast to (n_positions, width))."""
    return Intervention(Site.parse(site), "set", torch.as_tensor(value), _tuple(positions), None, _tuple(batch))


def add(site, delta, *, positions=None, batch=None) -> Intervention:
    """``site`` + ``delta`` (a steering vector, broadcast to (n_positions, width))."""
    return Intervention(Site.parse(site), "add", torch.as_tensor(delta), _tuple(positions), None, _tuple(batch))


def scale(site, factor: float, *, positions=None, batch=None) -> Intervention:
    """``site`` x ``factor``."""
    return Intervention(Site.parse(site), "scale", float(factor), _tuple(positions), None, _tuple(batch))


def zero(site, *, positions=None, batch=None) -> Intervention:
    """Zero ablation."""
    return Intervention(Site.parse(site), "zero", None, _tuple(positions), None, _tuple(batch))


def mean_ablate(site, mean=None, *, positions=None, batch=None) -> Intervention:
    """Mean ablation: ``site`` becomes ``mean`` (e.g. averaged over a reference set of prompts),
    or, when None, its own mean over the positions of this run."""
    value = None if mean is None else torch.as_tensor(mean)
    return Intervention(Site.parse(site), "mean", value, _tuple(positions), None, _tuple(batch))


# ------------------------------------------------------------------------- applying
def _as3d(t: torch.Tensor, squeeze: bool) -> torch.Tensor:
    return t.unsqueeze(-1) if squeeze else t


def edit_site_tensor(x: torch.Tensor, edit: Intervention, *, squeeze: bool = False) -> torch.Tensor:
    """Apply ``edit`` to the site tensor ``x`` (batch, pos, width) out of place."""
    b, s, _ = x.shape
    pos = normalise_positions(edit.positions, s)
    rows = normalise_positions(edit.batch, b, what="batch row")
    ri = torch.tensor(rows, device=x.device)[:, None]
    pi = torch.tensor(pos, device=x.device)[None, :]
    current = x[ri, pi]  # (n_rows, n_pos, width)
    if edit.op == "replace":
        v = _as3d(edit.value, squeeze).to(device=x.device, dtype=x.dtype)
        if v.dim() != 3 or v.shape[-1] != x.shape[-1]:
            raise InputError(f"replace at '{edit.site.name}': source of shape {tuple(edit.value.shape)} does not fit")
        if edit.source_positions is not None:
            src = normalise_positions(edit.source_positions, v.shape[1], what="source position")
        elif v.shape[1] == s:
            src = pos
        elif v.shape[1] == len(pos):
            src = list(range(len(pos)))
        else:
            raise InputError(
                f"replace at '{edit.site.name}': the source run has {v.shape[1]} positions and this one {s}; "
                "pass source_positions"
            )
        if len(src) != len(pos):
            raise InputError(f"replace at '{edit.site.name}': {len(src)} source positions for {len(pos)} positions")
        v = v[:, src]
        if v.shape[0] == b and b != len(rows):
            v = v[rows]  # the source run has this run's batch: row by row
        elif v.shape[0] not in (1, len(rows)):
            raise InputError(
                f"replace at '{edit.site.name}': the source has {v.shape[0]} batch rows for {len(rows)} rows here"
            )
        new = v.expand_as(current)
    elif edit.op == "set":
        new = edit.value.to(device=x.device, dtype=x.dtype).expand_as(current)
    elif edit.op == "add":
        new = current + edit.value.to(device=x.device, dtype=x.dtype)
    elif edit.op == "scale":
        new = current * edit.value
    elif edit.op == "zero":
        new = torch.zeros_like(current)
    else:  # mean
        if edit.value is None:
            mean = x[ri[:, 0]].mean(dim=1, keepdim=True)
        else:
            mean = edit.value.to(device=x.device, dtype=x.dtype)
        new = mean.expand_as(current)
    out = x.clone()
    out[ri, pi] = new
    return out


class _SiteHook:
    """All edits and captures of one (module, output|input); edits first, then captures."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.items: list[tuple[Location, Intervention | None, str | None]] = []

    def add_edit(self, loc: Location, edit: Intervention) -> None:
        self.items.append((loc, edit, None))

    def add_capture(self, loc: Location, name: str) -> None:
        self.items.append((loc, None, name))

    def process(self, t: torch.Tensor, store: dict[str, torch.Tensor], keep_grad: bool) -> torch.Tensor:
        for loc, edit, name in self.items:
            if edit is not None:
                if loc.start is None:
                    t = edit_site_tensor(t, edit)
                else:
                    part = edit_site_tensor(t[..., loc.start : loc.stop], edit, squeeze=loc.squeeze)
                    t = torch.cat([t[..., : loc.start], part, t[..., loc.stop :]], dim=-1)
            else:
                part = t if loc.start is None else t[..., loc.start : loc.stop]
                if loc.squeeze:
                    part = part[..., 0]
                store[name] = part if keep_grad else part.detach()
        return t


def install(
    patch: ModelPatch,
    model: nn.Module,
    edits: Sequence[Intervention] = (),
    capture: Sequence[str | Site] = (),
    *,
    store: dict[str, torch.Tensor] | None = None,
    keep_grad: bool = False,
    sites: SiteMap | None = None,
) -> dict[str, torch.Tensor]:
    """Install ``edits`` and the captures of ``capture`` on ``patch``; returns the capture dict."""
    sm = sites or site_map(model)
    store = {} if store is None else store
    hooks: dict[tuple[int, str], _SiteHook] = {}

    def hook_for(loc: Location) -> _SiteHook:
        key = (id(loc.module), loc.where)
        if key not in hooks:
            hooks[key] = _SiteHook(loc)
        return hooks[key]

    # the experts of MoE blocks: routed ones through their routing weights, shared ones per MoE block (patching.experts)
    moe_edits = [e for e in edits if sm.check(e.site).kind in EXPERT_KINDS]
    moe_capture = [s for s in (sm.check(c) for c in capture) if s.kind in EXPERT_KINDS]
    if moe_edits or moe_capture:
        from .experts import install_expert_edits

        install_expert_edits(patch, sm, moe_edits, moe_capture, store, keep_grad)
    for edit in edits:
        if edit.site.kind in EXPERT_KINDS:
            continue
        loc = sm.locate(edit.site)
        hook_for(loc).add_edit(loc, edit)
    for c in capture:
        s = sm.check(c)
        if s.kind in EXPERT_KINDS:
            continue
        loc = sm.locate(s)
        hook_for(loc).add_capture(loc, s.name)

    for h in hooks.values():
        if h.location.where == "output":

            def out_hook(_m, _args, output, h=h):
                return _with_first(output, h.process(_first(output), store, keep_grad))

            patch.hook_output(h.location.module, out_hook)
        else:

            def pre_hook(_m, args, kwargs, h=h):
                if args:
                    return (h.process(args[0], store, keep_grad), *args[1:]), kwargs
                key = next(iter(kwargs))
                kwargs = dict(kwargs)
                kwargs[key] = h.process(kwargs[key], store, keep_grad)
                return args, kwargs

            handle = h.location.module.register_forward_pre_hook(pre_hook, with_kwargs=True)
            patch.on_exit(handle.remove)
    return store


def _split(items: Sequence[Any]) -> tuple[list[Intervention], list[Any]]:
    from .edges import EdgeEdit

    site_edits, edge_edits = [], []
    for it in items:
        if isinstance(it, Intervention):
            site_edits.append(it)
        elif isinstance(it, EdgeEdit):
            edge_edits.append(it)
        elif isinstance(it, (list, tuple)):
            a, b = _split(it)
            site_edits += a
            edge_edits += b
        else:
            raise InputError(f"not an intervention: {type(it).__name__}")
    return site_edits, edge_edits


@contextmanager
def intervene(model: nn.Module, *edits: Intervention | Any) -> Iterator[ModelPatch]:
    """Apply site interventions and attention-edge edits for one ``with`` block."""
    site_edits, edge_edits = _split(edits)
    with ModelPatch(model) as patch:
        sm = site_map(model)
        install(patch, model, site_edits, sites=sm)
        if edge_edits:
            from .edges import install_edge_edits

            install_edge_edits(patch, model, edge_edits, sites=sm)
        yield patch


class ActivationCache(dict):
    """Site name -> tensor of one run (batch, pos, width; neurons (batch, pos))."""

    def __getitem__(self, key: str | Site) -> torch.Tensor:
        return super().__getitem__(key.name if isinstance(key, Site) else key)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.name if isinstance(key, Site) else key)


def run_with_cache(
    model: nn.Module,
    input_ids: torch.Tensor | Sequence[int],
    sites: str | Sequence[str | Site] = ("resid", "attn", "mlp"),
    *,
    interventions: Sequence[Any] = (),
    keep_grad: bool = False,
    **forward_kwargs: Any,
) -> tuple[Any, ActivationCache]:
    """One forward pass recording ``sites`` (names, ``layer.*.mlp`` patterns or bare kinds).

    Returns ``(model output, cache)``; ``interventions`` are active during the run (the
    cache then holds the edited values). Runs without gradients unless ``keep_grad``.
    """
    ids = _ids_tensor(model, input_ids)
    sm = site_map(model)
    wanted = sm.expand(sites)
    cache = ActivationCache()
    site_edits, edge_edits = _split(interventions)
    with ModelPatch(model) as patch:
        install(patch, model, site_edits, wanted, store=cache, keep_grad=keep_grad, sites=sm)
        if edge_edits:
            from .edges import install_edge_edits

            install_edge_edits(patch, model, edge_edits, sites=sm)
        with torch.set_grad_enabled(keep_grad and torch.is_grad_enabled()):
            out = model(input_ids=ids, use_cache=False, **forward_kwargs)
    return out, cache


def _ids_tensor(model: nn.Module, input_ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
    from lrp_llm.engines.generation import input_device

    ids = torch.as_tensor(input_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids[None]
    return ids.to(input_device(model))
