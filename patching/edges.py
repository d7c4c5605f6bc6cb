"""Attention-edge edits: scale or cut the attention weight of (layer, head, query, key).

A fused attention kernel (SDPA, flash) never materialises the weights, so an edited
layer is switched, for the duration of the ``with`` block only, to an attention
function that computes them explicitly (same math as the eager path: softmax of
``q k^T * scaling`` plus the model's mask, in float32), edits them and applies them to
the values. Only the edited layers' attention modules are pointed at it (each gets a
private shallow copy of the config with a private implementation name); the model's
shared config, every other layer and every other model keep their implementation. The
function is registered in transformers' ``AttentionInterface`` under a private name
while at least one edit is active, and removed afterwards.

Renormalisation is an explicit choice: ``renormalize=False`` leaves the edited row
summing to less (or more) than 1, as if the removed attention went nowhere;
``renormalize=True`` rescales the edited (head, query) rows to sum to 1 again, which
is the same as masking the cut keys before the softmax.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lrp_llm.errors import InputError, UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch

from .sites import SiteMap, site_map

ATTENTION_NAME = "_xai_tui_edge_edit"

_EDITS: weakref.WeakKeyDictionary[nn.Module, list[EdgeEdit]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
_USERS = 0


@dataclass(frozen=True)
class AttentionEdge:
    """One edge: query position ``query`` of head ``head`` in ``layer`` attending to ``key``."""

    layer: int
    head: int
    query: int
    key: int


@dataclass(frozen=True)
class EdgeEdit:
    """Multiply the attention weights of ``layer`` at heads x queries x keys by ``factor``.

    ``None`` for heads/queries/keys means all of them. Positions are absolute token
    positions of the sequence (negative ones count from its end), also with a KV cache.
    """

    layer: int
    heads: tuple[int, ...] | None
    queries: tuple[int, ...] | None
    keys: tuple[int, ...] | None
    factor: float
    renormalize: bool


def _tup(x: Sequence[int] | int | None) -> tuple[int, ...] | None:
    if x is None:
        return None
    if isinstance(x, int):
        return (int(x),)
    return tuple(int(i) for i in x)


def _layers(layers: Iterable[int] | int) -> list[int]:
    return [int(layers)] if isinstance(layers, int) else [int(i) for i in layers]


def scale_edges(
    layers: Iterable[int] | int,
    factor: float,
    *,
    heads: Sequence[int] | int | None = None,
    queries: Sequence[int] | int | None = None,
    keys: Sequence[int] | int | None = None,
    renormalize: bool,
) -> list[EdgeEdit]:
    """Scale the edges heads x queries x keys of each of ``layers`` by ``factor``."""
    if not isinstance(renormalize, bool):
        raise InputError("renormalize must be True or False")
    return [EdgeEdit(i, _tup(heads), _tup(queries), _tup(keys), float(factor), renormalize) for i in _layers(layers)]


def cut_edges(
    layers: Iterable[int] | int,
    *,
    heads: Sequence[int] | int | None = None,
    queries: Sequence[int] | int | None = None,
    keys: Sequence[int] | int | None = None,
    renormalize: bool,
) -> list[EdgeEdit]:
    """Attention knockout: weight 0 on the edges heads x queries x keys of each of ``layers``."""
    return scale_edges(layers, 0.0, heads=heads, queries=queries, keys=keys, renormalize=renormalize)


def edit_edges(edges: Iterable[AttentionEdge], factor: float, *, renormalize: bool) -> list[EdgeEdit]:
    """Scale each single edge by ``factor`` (0: cut)."""
    return [EdgeEdit(e.layer, (e.head,), (e.query,), (e.key,), float(factor), renormalize) for e in edges]


# --------------------------------------------------------------------- the function
def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(batch, kv_heads, pos, dim) -> (batch, kv_heads * n_rep, pos, dim)."""
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def _absolute(positions: tuple[int, ...], length: int, what: str) -> list[int]:
    """Absolute positions; those at or past ``length`` (not reached yet while generating) are left out."""
    out = []
    for p in positions:
        q = p + length if p < 0 else p
        if q < 0:
            raise InputError(f"attention edge {what} {p} is out of range for a sequence of {length} tokens")
        if q < length:
            out.append(q)
    return out


def edge_factors(
    edits: Sequence[EdgeEdit], n_heads: int, q_len: int, k_len: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(heads, q_len, k_len) multipliers and (heads, q_len) renormalise flags of ``edits``.

    Query ``i`` of this call is the absolute position ``k_len - q_len + i``; edits of
    queries outside the call (earlier positions served from a cache, or positions not
    reached yet) do nothing, and keys past the end are masked anyway.
    """
    factors = torch.ones(n_heads, q_len, k_len, dtype=torch.float32, device=device)
    renorm = torch.zeros(n_heads, q_len, dtype=torch.bool, device=device)
    offset = k_len - q_len
    for e in edits:
        heads = list(range(n_heads)) if e.heads is None else list(e.heads)
        bad = [h for h in heads if not 0 <= h < n_heads]
        if bad:
            raise InputError(f"attention edge head {bad[0]} is out of range; layers have heads 0..{n_heads - 1}")
        if e.queries is None:
            local = list(range(q_len))
        else:
            local = [q - offset for q in _absolute(e.queries, k_len, "query") if q >= offset]
        if not local:
            continue
        keys = list(range(k_len)) if e.keys is None else _absolute(e.keys, k_len, "key")
        if not keys:
            continue
        hi = torch.tensor(heads, device=device)[:, None, None]
        qi = torch.tensor(local, device=device)[None, :, None]
        ki = torch.tensor(keys, device=device)[None, None, :]
        factors[hi, qi, ki] = factors[hi, qi, ki] * e.factor
        if e.renormalize:
            renorm[hi[..., 0], qi[..., 0]] = True
    return factors, renorm


def edge_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with explicit weights and this module's edge edits applied.

    query (batch, heads, q_len, dim), key/value (batch, kv_heads, k_len, dim);
    returns (batch, q_len, heads, dim) and the edited weights (batch, heads, q_len, k_len).
    """
    key = _repeat_kv(key, getattr(module, "num_key_value_groups", 1))
    value = _repeat_kv(value, getattr(module, "num_key_value_groups", 1))
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    softcap = kwargs.get("softcap")
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    q_len, k_len = query.shape[2], key.shape[2]
    low = torch.finfo(scores.dtype).min
    if attention_mask is None:  # what SDPA's is_causal does: causal, queries at the end
        qpos = torch.arange(q_len, device=query.device) + (k_len - q_len)
        allowed = torch.arange(k_len, device=query.device)[None, :] <= qpos[:, None]
        scores = scores.masked_fill(~allowed, low)
    elif not isinstance(attention_mask, torch.Tensor):
        raise UnsupportedModelError(
            "attention-edge edits need a tensor attention mask (eager or sdpa); load the model with "
            "attn_implementation='sdpa' or 'eager'"
        )
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask[..., :k_len], low)
    else:
        scores = scores + attention_mask[..., :k_len]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32)
    edits = _EDITS.get(module)
    if edits:
        factors, renorm = edge_factors(edits, weights.shape[1], q_len, k_len, weights.device)
        weights = weights * factors
        if bool(renorm.any()):
            total = weights.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
            weights = torch.where(renorm[..., None], weights / total, weights)
    weights = weights.to(query.dtype)
    if dropout and module.training:
        weights = nn.functional.dropout(weights, p=dropout, training=True)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


def _acquire() -> None:
    global _USERS
    from transformers.modeling_utils import AttentionInterface

    with _LOCK:
        if _USERS == 0:
            AttentionInterface.register(ATTENTION_NAME, edge_attention_forward)
        _USERS += 1


def _release() -> None:
    global _USERS
    from transformers.modeling_utils import AttentionInterface

    with _LOCK:
        _USERS -= 1
        if _USERS == 0:
            AttentionInterface._global_mapping.pop(ATTENTION_NAME, None)


def install_edge_edits(
    patch: ModelPatch, model: nn.Module, edits: Sequence[EdgeEdit], *, sites: SiteMap | None = None
) -> None:
    """Point the edited layers' attention at :func:`edge_attention_forward` until ``patch`` exits."""
    sm = sites or site_map(model)
    if "attn" not in sm.kinds:
        raise InputError(f"attention-edge edits need attention layers; a {sm.family}-family model has none")
    by_layer: dict[int, list[EdgeEdit]] = {}
    for e in edits:
        if not 0 <= e.layer < sm.n_layers:
            raise InputError(
                f"attention edge layer {e.layer} is out of range; the model has layers 0..{sm.n_layers - 1}"
            )
        if not sm.has(e.layer, "attn"):
            where = ", ".join(map(str, sm.layers_with("attn")))
            raise InputError(
                f"attention edge layer {e.layer} has no attention (its block has {sm.describe_layer(e.layer)}); attention layers: {where}"
            )
        by_layer.setdefault(e.layer, []).append(e)
    _acquire()
    patch.on_exit(_release)
    for layer, layer_edits in by_layer.items():
        attn = sm.module(layer, "attn")
        had = _EDITS.get(attn)
        _EDITS[attn] = [*(had or []), *layer_edits]
        own_config = attn.__dict__.get("config")
        if own_config is None:
            raise UnsupportedModelError(f"{type(attn).__name__} keeps no config; attention-edge edits need one")
        private = copy.copy(own_config)
        # bypass the property setter: it would also rewrite sub-configs shared with the original
        private.__dict__["_attn_implementation_internal"] = ATTENTION_NAME
        attn.__dict__["config"] = private

        def undo(attn=attn, own_config=own_config, had=had) -> None:
            attn.__dict__["config"] = own_config
            if had is None:
                _EDITS.pop(attn, None)
            else:
                _EDITS[attn] = had

        patch.on_exit(undo)
