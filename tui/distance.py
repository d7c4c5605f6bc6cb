"""Relevance by token distance for one explained token (the long-range view's numbers).

A small local helper: ``lrp_llm.longrange`` is the library's home for long-range
statistics; this module computes only what the view shows, from one relevance vector.
Distance of input token ``j`` for a target at position ``p`` is ``p - j`` (1 = the token
right before it). Bins are powers of two: [1, 2), [2, 4), [4, 8), ...
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DistanceProfile:
    """Relevance of one target, pooled by distance.

    ``edges`` has one more entry than the bins: bin ``k`` holds distances
    ``edges[k] <= d < edges[k + 1]``. ``signed`` and ``absolute`` (shape (bins,)) are sums
    of relevance and |relevance|; ``counts`` the tokens per bin; ``far_share`` the share of
    the total |relevance| held by tokens at distance >= ``far``.
    """

    edges: list[int]
    signed: np.ndarray
    absolute: np.ndarray
    counts: np.ndarray
    far: int
    far_share: float

    @property
    def share(self) -> np.ndarray:
        total = float(self.absolute.sum())
        return self.absolute / total if total > 0 else np.zeros_like(self.absolute)


def log_edges(max_distance: int) -> list[int]:
    """1, 2, 4, ... up to the first power of two above ``max_distance``."""
    edges = [1]
    while edges[-1] <= max_distance:
        edges.append(edges[-1] * 2)
    return edges


def relevance_by_distance(relevance: np.ndarray, far: int = 32) -> DistanceProfile:
    """Pool ``relevance`` (shape (position,): tokens before the target) by log2 distance."""
    r = np.asarray(relevance, dtype=np.float64)
    p = len(r)
    distance = p - np.arange(p)  # token j sits p - j tokens before the target
    edges = log_edges(max(p, 1))
    bins = np.searchsorted(edges, distance, side="right") - 1
    n = len(edges) - 1
    signed = np.bincount(bins, weights=r, minlength=n)[:n]
    absolute = np.bincount(bins, weights=np.abs(r), minlength=n)[:n]
    counts = np.bincount(bins, minlength=n)[:n]
    total = float(np.abs(r).sum())
    far_share = float(np.abs(r[distance >= far]).sum() / total) if total > 0 else 0.0
    return DistanceProfile(edges, signed, absolute, counts, int(far), far_share)


def far_tokens(relevance: np.ndarray, far: int, k: int = 50) -> list[tuple[int, int, float]]:
    """The ``k`` tokens at distance >= ``far`` with the largest |relevance|: (index, distance, value)."""
    r = np.asarray(relevance, dtype=np.float64)
    p = len(r)
    idx = np.arange(max(0, p - far + 1))
    idx = idx[p - idx >= far]
    order = idx[np.argsort(-np.abs(r[idx]), kind="stable")][:k]
    return [(int(j), int(p - j), float(r[j])) for j in order]
