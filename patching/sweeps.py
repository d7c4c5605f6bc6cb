"""Activation-patching sweeps: every layer x position (resid/attn/mlp/mixer) and every
layer x head, in both directions, with logit difference, normalised recovery and KL.

A sweep patches one site of the *base* run with the value it had in the *source* run
and reads the metric at the last position. ``direction="denoise"`` (clean ->
corrupted) runs the corrupted prompt with clean activations patched in;
``direction="noise"`` (corrupted -> clean) runs the clean prompt with corrupted ones.

Three engines give the same numbers (tested against each other):

- ``stepper`` (Llama family, the default): the base run is recorded once (the hidden
  state entering every layer, its keys and values, the arguments each layer receives).
  A variant that patches layer ``i`` at position ``p`` starts at layer ``i`` from the
  recorded state, and -- the model being causal -- only positions ``p..T-1`` are
  computed, attending to the recorded keys/values of positions ``< p``. All variants
  with the same first position run as one batch, layer by layer, a variant joining
  the batch at its layer. Logits are computed at the last position only, and only
  for the answer and wrong tokens unless KL is asked for. The engine checks itself
  against the model's own forward first and falls back to ``batched`` if it differs.
- ``batched`` (any family, e.g. Mamba): variants as a batch through the whole model,
  per-row hooks, logits at the last position.
- ``naive``: one full forward per variant with :func:`patching.intervene` (the
  reference; ``benchmarks/patching_speed.py`` times it against ``stepper``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lrp_llm.errors import Cancelled, InputError, ShouldCancel

from .interventions import ActivationCache, _first, _ids_tensor, _with_first, intervene, replace, run_with_cache
from .metrics import Reference, check_metrics, logit_diff
from .result import DIRECTIONS, Grid
from .sites import Location, Site, SiteMap, normalise_positions, site_map

ENGINES = ("auto", "stepper", "batched", "naive")
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


# ------------------------------------------------------------------ per-row edits
class _RowEdits:
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
def _row_hooks(edits: dict[tuple[int, str], _RowEdits]):
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


def _source_value(cache: ActivationCache, v: Variant) -> torch.Tensor:
    """(n_positions, width) source values of ``v`` at its positions."""
    t = cache[v.site.name][0]
    return t[list(v.positions)]


def _add_edit(edits: dict, sm: SiteMap, v: Variant, row: int, offset: int, cache: ActivationCache) -> None:
    loc = sm.locate(v.site)
    key = (id(loc.module), loc.where)
    if key not in edits:
        edits[key] = _RowEdits(loc)
    edits[key].items.append((row, [p - offset for p in v.positions], loc.start, loc.stop, _source_value(cache, v)))


# ------------------------------------------------------------------- the stepper
class StepperUnsupported(Exception):
    """The layer stepper cannot reproduce this model's forward; use the batched engine."""


class _KVRecorder:
    """Stands in for a KV cache in one layer of the base run: records keys and values."""

    def __init__(self) -> None:
        self.kv: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states, value_states, layer_idx=None, *args, **kwargs):
        self.kv = (key_states.detach(), value_states.detach())
        return key_states, value_states


class _PrefixKV:
    """Stands in for a KV cache in one layer of a variant batch: prepends the base run's
    keys/values of the positions before the batch's first position (shared by all rows)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = keys, values  # (1, kv_heads, start, dim)

    def update(self, key_states, value_states, layer_idx=None, *args, **kwargs):
        n = key_states.shape[0]
        if self.keys.shape[2] == 0:
            return key_states, value_states
        k = torch.cat([self.keys.expand(n, -1, -1, -1), key_states], dim=2)
        v = torch.cat([self.values.expand(n, -1, -1, -1), value_states], dim=2)
        return k, v


class LayerStepper:
    """Runs decoder layers ``i..L-1`` on batches of variants of one recorded base run."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, sm: SiteMap, answer_id: int, wrong_id: int) -> None:
        if sm.family != "llama":
            raise StepperUnsupported(f"{sm.family} blocks keep a recurrent state, not keys and values")
        self.model, self.sm = model, sm
        self.answer_id, self.wrong_id = answer_id, wrong_id
        self.T = ids.shape[1]
        base = getattr(model, "model", None)
        self.norm = getattr(base, "norm", None)
        self.head = model.get_output_embeddings()
        if self.norm is None or self.head is None:
            raise StepperUnsupported("no final norm / output head found")
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        n = sm.n_layers
        self.inputs: list[torch.Tensor | None] = [None] * n
        self.outputs: list[torch.Tensor | None] = [None] * n
        self.kwargs: list[dict | None] = [None] * n
        recorders = [_KVRecorder() for _ in range(n)]
        handles = []
        for j, layer in enumerate(sm.layers):

            def pre(_m, args, kwargs, j=j):
                hidden = args[0] if args else kwargs["hidden_states"]
                self.inputs[j] = hidden.detach()
                kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                self.kwargs[j] = kw
                return args, {**kwargs, "past_key_values": recorders[j]}

            def post(_m, _args, out, j=j):
                self.outputs[j] = _first(out).detach()

            handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(layer.register_forward_hook(post))
        try:
            with torch.no_grad():
                self.logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1].detach()
        finally:
            for h in handles:
                h.remove()
        if any(r.kv is None for r in recorders) or any(x is None for x in self.inputs):
            raise StepperUnsupported("the layers do not expose their keys and values")
        self.kv = [r.kv for r in recorders]
        self._sliced: dict[int, list[dict]] = {}

    # -- arguments of each layer for a batch starting at position ``s`` --------------
    def layer_kwargs(self, s: int) -> list[dict]:
        if s in self._sliced:
            return self._sliced[s]
        T = self.T
        out = []
        for j, kw in enumerate(self.kwargs):
            kw = dict(kw)
            mask = kw.get("attention_mask")
            if mask is None:
                if s > 0:  # SDPA's is_causal would align the queries at the start: spell the mask out
                    q = torch.arange(s, T, device=self.logits.device)[:, None]
                    kw["attention_mask"] = (torch.arange(T, device=self.logits.device)[None, :] <= q)[None, None]
            elif isinstance(mask, torch.Tensor) and mask.dim() == 4:
                kw["attention_mask"] = mask[:, :, s:, :]
            else:
                raise StepperUnsupported("attention mask of an unknown form")
            pe = kw.get("position_embeddings")
            if isinstance(pe, (tuple, list)):
                kw["position_embeddings"] = tuple(t[..., s:, :] for t in pe)
            elif pe is not None:
                raise StepperUnsupported("position embeddings of an unknown form")
            for name in ("position_ids", "cache_position"):
                if isinstance(kw.get(name), torch.Tensor):
                    kw[name] = kw[name][..., s:]
            keys, values = self.kv[j]
            kw["past_key_values"] = _PrefixKV(keys[:, :, :s], values[:, :, :s])
            out.append(kw)
        self._sliced = {s: out}  # one start at a time: keep memory flat
        return out

    def readout(self, last: torch.Tensor, full: bool) -> torch.Tensor:
        """(n, d_model) hidden states at the last position -> (n, vocab) or (n, 2) logits."""
        h = self.norm(last[:, None, :])[:, 0]
        if full:
            logits = self.head(h)
        else:
            ids = [self.answer_id, self.wrong_id]
            logits = h @ self.head.weight[ids].T
            if getattr(self.head, "bias", None) is not None:
                logits = logits + self.head.bias[ids]
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def run(self, start: int, variants: Sequence[Variant], cache: ActivationCache, full: bool) -> torch.Tensor:
        """Last-position logits of ``variants`` (first positions all >= ``start``), in their order."""
        kws = self.layer_kwargs(start)
        order: list[int] = []
        hidden: torch.Tensor | None = None
        j0 = min(v.layer for v in variants)
        for j in range(j0, self.sm.n_layers):
            pre = [i for i, v in enumerate(variants) if v.layer == j and v.kind != "resid"]
            edits: dict = {}
            if pre:
                rows = self.inputs[j][:, start:].expand(len(pre), -1, -1)
                base_row = 0 if hidden is None else hidden.shape[0]
                hidden = rows if hidden is None else torch.cat([hidden, rows])
                for k, i in enumerate(pre):
                    _add_edit(edits, self.sm, variants[i], base_row + k, start, cache)
                order += pre
            if hidden is not None:
                with _row_hooks(edits):
                    hidden = _first(self.sm.layers[j](hidden, **kws[j]))
            post = [i for i, v in enumerate(variants) if v.layer == j and v.kind == "resid"]
            if post:
                rows = self.outputs[j][:, start:].repeat(len(post), 1, 1)
                for k, i in enumerate(post):
                    v = variants[i]
                    rows[k, [p - start for p in v.positions]] = _source_value(cache, v).to(rows.dtype)
                hidden = rows if hidden is None else torch.cat([hidden, rows])
                order += post
        logits = self.readout(hidden[:, -1], full)
        out = torch.empty_like(logits)
        out[torch.tensor(order, device=logits.device)] = logits
        return out

    def verify(self) -> None:
        """Reproduce the base run's last logits from layer 0 at a mid start position."""
        s = self.T // 2
        kws = self.layer_kwargs(s)
        hidden = self.inputs[0][:, s:]
        with torch.no_grad():
            for j in range(self.sm.n_layers):
                hidden = _first(self.sm.layers[j](hidden, **kws[j]))
            got = self.readout(hidden[:, -1], True)[0]
        want = self.logits
        tol = max(1e-3, 50 * torch.finfo(want.dtype).eps) * max(1.0, float(want.abs().max()))
        err = float((got - want).abs().max())
        if not err <= tol:
            raise StepperUnsupported(f"layer stepping differs from the model's forward by {err:.3g}")


# ----------------------------------------------------------------------- variants
def make_variants(
    sm: SiteMap, kinds: Sequence[str], T: int, positions: Sequence[int] | None, head_positions: Sequence[int] | None
) -> list[Variant]:
    pos = normalise_positions(positions, T)
    hpos = tuple(normalise_positions(head_positions, T))
    out: list[Variant] = []
    for kind in kinds:
        if kind == "head":
            out += [Variant("head", i, hpos, h) for i in range(sm.n_layers) for h in range(sm.n_heads)]
        else:
            out += [Variant(kind, i, (p,)) for p in pos for i in range(sm.n_layers)]
    return out


def _chunks(variants: list[Variant], max_tokens: int, T: int, by_start: bool) -> list[tuple[int, list[Variant]]]:
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


# ---------------------------------------------------------------------- the sweep
@dataclass
class SweepOutput:
    """Raw sweep values: ``values[(kind, metric)]`` is (n_layers, n_columns)."""

    direction: str
    positions: list[int]
    n_heads: int
    values: dict[tuple[str, str], np.ndarray]
    reference: Reference
    engine: str
    seconds: float


def _kinds(sm: SiteMap, kinds: Sequence[str]) -> list[str]:
    out = []
    for k in kinds:
        k = "mixer" if (k in ("attn", "mlp") and sm.family == "mamba" and "mixer" not in kinds) else k
        if k not in sm.kinds or k == "neuron":
            allowed = [x for x in sm.kinds if x != "neuron"]
            raise InputError(f"cannot sweep '{k}' on a {sm.family}-family model; choose from {', '.join(allowed)}")
        if k not in out:
            out.append(k)
    return out


def base_and_source(model: nn.Module, clean_ids, corrupted_ids, direction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(base, source)`` id tensors of a prompt pair: the run that is patched and the one patched from.

    denoise: clean activations into the corrupted run; noise: the reverse. Both prompts
    must have the same number of tokens (sites are matched position by position).
    """
    if direction not in DIRECTIONS:
        raise InputError(f"unknown direction '{direction}'; choose denoise (clean -> corrupted) or noise")
    clean = _ids_tensor(model, clean_ids)
    corrupted = _ids_tensor(model, corrupted_ids)
    if clean.shape != corrupted.shape:
        raise InputError(
            f"the clean and corrupted prompts must have the same number of tokens to patch position by position "
            f"(got {clean.shape[1]} and {corrupted.shape[1]}); rephrase one of them"
        )
    return (corrupted, clean) if direction == "denoise" else (clean, corrupted)


def sweep(
    model: nn.Module,
    clean_ids: torch.Tensor | Sequence[int],
    corrupted_ids: torch.Tensor | Sequence[int],
    answer_id: int,
    wrong_id: int,
    *,
    kinds: Sequence[str] = ("resid", "attn", "mlp"),
    direction: str = "denoise",
    positions: Sequence[int] | None = None,
    head_positions: Sequence[int] | None = None,
    metrics: Sequence[str] = ("logit_diff", "recovery", "kl"),
    engine: str = "auto",
    max_tokens: int = 8192,
    naive_logits_to_keep: int = 0,
    reference: Reference | None = None,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> SweepOutput:
    """Patch every (layer, position) of ``kinds`` (and every (layer, head) for ``"head"``).

    ``positions``: the columns of position sweeps (default all); ``head_positions``: the
    positions a head is patched at (default all). Prompts must have the same length.
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine '{engine}'; choose from {', '.join(ENGINES)}")
    base, source = base_and_source(model, clean_ids, corrupted_ids, direction)
    clean, corrupted = (source, base) if direction == "denoise" else (base, source)
    metrics = check_metrics(metrics)
    sm = site_map(model)
    kinds = _kinds(sm, kinds)
    T = base.shape[1]
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if reference is None:
                lc = model(input_ids=clean, use_cache=False, logits_to_keep=1).logits[0, -1]
                lx = model(input_ids=corrupted, use_cache=False, logits_to_keep=1).logits[0, -1]
                reference = Reference.from_logits(lc, lx, answer_id, wrong_id)
            cache_sites = [("head" if k == "head" else f"layer.*.{k}") for k in kinds]
            _, cache = run_with_cache(model, source, cache_sites)
            variants = make_variants(sm, kinds, T, positions, head_positions)
            full = "kl" in metrics
            logits = _run_engine(
                model, sm, base, variants, cache, engine, full, max_tokens, naive_logits_to_keep,
                answer_id, wrong_id, progress, should_cancel,
            )  # fmt: skip
            used = logits.pop("engine")
    finally:
        model.train(was_training)
    pos = normalise_positions(positions, T)
    col = {p: c for c, p in enumerate(pos)}
    values: dict[tuple[str, str], np.ndarray] = {}
    ld = logit_diff(logits["logits"], 0, 1) if not full else logit_diff(logits["logits"], answer_id, wrong_id)
    per_metric = {"logit_diff": ld, "recovery": reference.recovery(ld)}
    if full:
        per_metric["kl"] = reference.kl(logits["logits"])
    for kind in kinds:
        width = sm.n_heads if kind == "head" else len(pos)
        for m in metrics:
            values[(kind, m)] = np.full((sm.n_layers, width), np.nan, dtype=np.float32)
    for r, v in enumerate(variants):
        c = v.head if v.kind == "head" else col[v.positions[0]]
        for m in metrics:
            values[(v.kind, m)][v.layer, c] = float(per_metric[m][r])
    return SweepOutput(direction, pos, sm.n_heads, values, reference, used, time.perf_counter() - t0)


def _run_engine(
    model, sm, base, variants, cache, engine, full, max_tokens, naive_keep, answer_id, wrong_id, progress, should_cancel
) -> dict:
    total = len(variants)
    done = 0
    T = base.shape[1]

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    def check() -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled()

    index = {v: i for i, v in enumerate(variants)}
    rows: list[torch.Tensor | None] = [None] * total

    def keep(chunk, logits):
        if not full:
            logits = logits if logits.shape[-1] == 2 else logits[:, [answer_id, wrong_id]]
        for v, row in zip(chunk, logits):
            rows[index[v]] = row.detach().float().cpu()

    used = engine
    stepper = None
    if engine in ("auto", "stepper"):
        try:
            stepper = LayerStepper(model, base, sm, answer_id, wrong_id)
            stepper.verify()
            used = "stepper"
        except StepperUnsupported:
            if engine == "stepper":
                raise
            used = "batched"
    if used == "stepper":
        for s, chunk in _chunks(variants, max_tokens, T, by_start=True):
            check()
            keep(chunk, stepper.run(s, chunk, cache, full))
            tick(len(chunk))
    elif used == "batched":
        for _, chunk in _chunks(variants, max_tokens, T, by_start=False):
            check()
            edits: dict = {}
            for r, v in enumerate(chunk):
                _add_edit(edits, sm, v, r, 0, cache)
            with _row_hooks(edits):
                out = model(input_ids=base.expand(len(chunk), -1), use_cache=False, logits_to_keep=1).logits[:, -1]
            keep(chunk, out)
            tick(len(chunk))
    else:  # naive: one forward per variant through the public intervention API
        for v in variants:
            check()
            with intervene(model, replace(v.site, cache, positions=list(v.positions))):
                out = model(input_ids=base, use_cache=False, logits_to_keep=naive_keep).logits[:, -1]
            keep([v], out)
            tick(1)
    return {"logits": torch.stack(rows), "engine": used}


# ----------------------------------------------------------------------- to grids
def sweep_grids(out: SweepOutput, sm_layers: int, tokens: Sequence[str] | None, method: str = "sweep") -> list[Grid]:
    grids = []
    for (kind, metric), values in out.values.items():
        if kind == "head":
            rows = [f"layer.{i}.attn" for i in range(sm_layers)]
            cols = [f"head.{h}" for h in range(out.n_heads)]
            positions = None
        else:
            rows = [f"layer.{i}.{kind}" for i in range(sm_layers)]
            cols = [tokens[p] if tokens is not None else str(p) for p in out.positions]
            positions = list(out.positions)
        grids.append(Grid(kind, method, out.direction, metric, rows, cols, values, positions))
    return grids
