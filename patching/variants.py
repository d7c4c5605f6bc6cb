"""Patched runs ("variants") and what every sweep engine shares: the job it is given,
the batches it runs, per-row edits of a batched call, and where the logits go."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from lrp_llm.errors import ShouldCancel, check_cancel

from .interventions import ActivationCache, _first, _with_first
from .sites import Location, Site, SiteMap, normalise_positions

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Variant:
    """One patched run: ``kind`` at ``layer`` (and ``head``) at ``positions``."""

    kind: str
    layer: int
    positions: tuple[int, ...]
    head: int | None = None

    @property
    def start(self) -> int:
        return min(self.positions)

    @property
    def site(self) -> Site:
        return Site(self.layer, "head", self.head) if self.kind == "head" else Site(self.layer, self.kind)


def make_variants(
    sm: SiteMap, kinds: Sequence[str], T: int, positions: Sequence[int] | None, head_positions: Sequence[int] | None
) -> list[Variant]:
    pos = normalise_positions(positions, T)
    hpos = tuple(normalise_positions(head_positions, T))
    out: list[Variant] = []
    for kind in kinds:
        if kind == "head":
            out += [Variant("head", i, hpos, h) for i in sm.layers_with("head") for h in range(sm.n_heads)]
        else:  # only the blocks that have the kind (hybrids); the grids keep NaN in the others' rows
            out += [Variant(kind, i, (p,)) for p in pos for i in sm.layers_with(kind)]
    return out


@dataclass(frozen=True)
class EngineJob:
    """What a sweep engine runs: every variant of one base run, patched from the source cache."""

    model: nn.Module
    sites: SiteMap
    base: torch.Tensor  # (1, T) token ids of the run that is patched
    variants: list[Variant]
    cache: ActivationCache  # the source run's activations at the swept sites
    answer_id: int
    wrong_id: int
    full_logits: bool  # whole-vocabulary rows (KL asked for), else the answer and wrong logits
    max_tokens: int  # rows x computed positions per batch
    naive_logits_to_keep: int = 0
    progress: Progress | None = None
    should_cancel: ShouldCancel | None = None

    @property
    def T(self) -> int:
        return self.base.shape[1]


class LogitRows:
    """Collects the last-position logits of a job's variants in their order, reporting progress."""

    def __init__(self, job: EngineJob) -> None:
        self.job = job
        self._index = {v: i for i, v in enumerate(job.variants)}
        self._rows: list[torch.Tensor | None] = [None] * len(job.variants)
        self._done = 0

    def check_cancel(self) -> None:
        check_cancel(self.job.should_cancel)

    def keep(self, chunk: Sequence[Variant], logits: torch.Tensor) -> None:
        """``logits``: (len(chunk), vocab) or (len(chunk), 2) rows of ``chunk``'s variants."""
        job = self.job
        if not job.full_logits:
            logits = logits if logits.shape[-1] == 2 else logits[:, [job.answer_id, job.wrong_id]]
        for v, row in zip(chunk, logits):
            self._rows[self._index[v]] = row.detach().float().cpu()
        self._done += len(chunk)
        if job.progress is not None:
            job.progress(self._done, len(job.variants))

    def stacked(self) -> torch.Tensor:
        """(n_variants, vocab or 2) logits."""
        return torch.stack(self._rows)


def pack(variants: list[Variant], max_tokens: int, T: int, by_start: bool) -> list[tuple[int, list[Variant]]]:
    """Batches of variants and the first position each batch computes from.

    ``by_start`` (the stepper): variants sorted by first position, then packed while
    rows x (T - the batch's first position) stays within ``max_tokens``; a variant whose
    own first position is later just recomputes a few unchanged positions, which costs
    less than running many small batches. Otherwise (whole-model batches) all from 0.
    """
    order = sorted(variants, key=lambda v: (v.start, v.layer)) if by_start else list(variants)
    out: list[tuple[int, list[Variant]]] = []
    chunk: list[Variant] = []
    s0 = 0
    for v in order:
        first = v.start if by_start else 0
        if not chunk:
            s0 = first
        elif (len(chunk) + 1) * (T - s0) > max_tokens:
            out.append((s0, chunk))
            chunk, s0 = [], first
        chunk.append(v)
    if chunk:
        out.append((s0, chunk))
    return out


# ------------------------------------------------------------------ per-row edits
class RowEdits:
    """Per-batch-row replacements on one module's output or input during a batched call."""

    def __init__(self, loc: Location) -> None:
        self.loc = loc
        # row, positions in the call, slice of the last dimension (heads), (n_pos, width) value
        self.items: list[tuple[int, list[int], int | None, int | None, torch.Tensor]] = []

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        for row, pos, a, b, value in self.items:
            idx = torch.tensor(pos, device=t.device)
            if a is None:
                t[row, idx] = value.to(t.dtype)
            else:
                t[row, idx, a:b] = value.to(t.dtype)
        return t


@contextmanager
def row_hooks(edits: dict[tuple[int, str], RowEdits]):
    handles = []
    try:
        for e in edits.values():
            if e.loc.where == "output":
                handles.append(
                    e.loc.module.register_forward_hook(lambda _m, _a, out, e=e: _with_first(out, e.apply(_first(out))))
                )
            else:

                def pre(_m, args, kwargs, e=e):
                    if args:
                        return (e.apply(args[0]), *args[1:]), kwargs
                    key = next(iter(kwargs))
                    return args, {**kwargs, key: e.apply(kwargs[key])}

                handles.append(e.loc.module.register_forward_pre_hook(pre, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def source_value(cache: ActivationCache, v: Variant) -> torch.Tensor:
    """(n_positions, width) source values of ``v`` at its positions."""
    t = cache[v.site.name][0]
    return t[list(v.positions)]


def add_edit(edits: dict, sm: SiteMap, v: Variant, row: int, offset: int, cache: ActivationCache) -> None:
    """Row ``row`` of the next batched call gets ``v``'s source value (positions shifted by ``offset``)."""
    loc = sm.locate(v.site)
    key = (id(loc.module), loc.where)
    if key not in edits:
        edits[key] = RowEdits(loc)
    edits[key].items.append((row, [p - offset for p in v.positions], loc.start, loc.stop, source_value(cache, v)))
