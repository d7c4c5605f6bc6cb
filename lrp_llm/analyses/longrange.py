"""Long-range statistics of an explanation: how far back does the relevance reach?

For a target token at position ``p`` (predicted from position ``p - 1``), input token
``j < p`` lies at distance ``p - j`` (1 = the token the prediction was made from).
Everything here works on one relevance vector (shape (p,)), numpy only, so it serves
transformers and Mamba models alike (see ``xai-tui longrange`` and the ``longrange``
key of each target in the explain JSON):

- :func:`relevance_by_distance`: relevance mass in log2-spaced distance bins
  [1, 2), [2, 4), [4, 8), ...
- :func:`share_beyond`: the share of total |relevance| at distance > d.
- :func:`farthest_relevant`: the farthest token whose |relevance| is at least a fraction
  of the largest |relevance|.
- :func:`far_tokens`: the k far tokens with the largest |relevance|, with their text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

THRESHOLDS = (100, 1000)
FRACTION = 0.1
TOP_K = 5


def distances(n: int) -> np.ndarray:
    """Distance of each of the ``n`` tokens before a target at position ``n``: n, n-1, ..., 1."""
    return n - np.arange(n)


def log_edges(max_distance: int) -> list[int]:
    """Bin edges 1, 2, 4, ... with the last edge above ``max_distance``."""
    edges = [1]
    while edges[-1] <= max(1, max_distance):
        edges.append(edges[-1] * 2)
    return edges


@dataclass(frozen=True)
class DistanceBins:
    """Relevance pooled by distance: bin ``k`` holds distances ``edges[k] <= d < edges[k + 1]``.

    ``signed`` and ``absolute`` (shape (bins,)) are sums of relevance and |relevance|,
    ``counts`` the number of tokens in each bin.
    """

    edges: list[int]
    signed: np.ndarray
    absolute: np.ndarray
    counts: np.ndarray

    @property
    def share(self) -> np.ndarray:
        """|relevance| of each bin over the total (zeros when there is no relevance)."""
        total = float(self.absolute.sum())
        return self.absolute / total if total > 0 else np.zeros_like(self.absolute)


def relevance_by_distance(relevance: np.ndarray) -> DistanceBins:
    """Pool ``relevance`` (shape (p,): the tokens before the target) into log2 distance bins."""
    r = np.asarray(relevance, dtype=np.float64)
    d = distances(len(r))
    edges = log_edges(int(d.max()) if len(d) else 1)
    n_bins = len(edges) - 1
    bins = np.searchsorted(edges, d, side="right") - 1
    signed = np.bincount(bins, weights=r, minlength=n_bins)[:n_bins]
    absolute = np.bincount(bins, weights=np.abs(r), minlength=n_bins)[:n_bins]
    counts = np.bincount(bins, minlength=n_bins)[:n_bins]
    return DistanceBins(edges, signed, absolute, counts)


def share_beyond(relevance: np.ndarray, distance: int) -> float:
    """Share of the total |relevance| held by tokens more than ``distance`` tokens back."""
    r = np.abs(np.asarray(relevance, dtype=np.float64))
    total = float(r.sum())
    if total <= 0:
        return 0.0
    return float(r[distances(len(r)) > distance].sum() / total)


def farthest_relevant(relevance: np.ndarray, fraction: float = FRACTION) -> int | None:
    """Index of the farthest token with |relevance| >= ``fraction`` x max |relevance| (None if all zero).
    A NaN (a missing value in a saved result) counts as no relevance."""
    r = np.nan_to_num(np.abs(np.asarray(relevance, dtype=np.float64)), nan=0.0)
    if not len(r) or float(r.max()) <= 0:
        return None
    return int(np.flatnonzero(r >= fraction * r.max())[0])


@dataclass(frozen=True)
class FarToken:
    index: int
    distance: int
    relevance: float
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "distance": self.distance, "relevance": self.relevance, "text": self.text}


def far_tokens(
    relevance: np.ndarray, tokens: list[str] | None = None, *, min_distance: int = THRESHOLDS[0], k: int = TOP_K
) -> list[FarToken]:
    """The ``k`` tokens more than ``min_distance`` back with the largest |relevance|, largest first."""
    r = np.asarray(relevance, dtype=np.float64)
    d = distances(len(r))
    idx = np.flatnonzero(d > min_distance)
    order = idx[np.argsort(-np.abs(r[idx]), kind="stable")][:k]
    return [
        FarToken(int(j), int(d[j]), float(r[j]), tokens[j] if tokens is not None and j < len(tokens) else None)
        for j in order
    ]


@dataclass
class LongRange:
    """Long-range summary of one target's relevance."""

    position: int
    bins: DistanceBins
    share_beyond: dict[int, float]
    farthest_index: int | None
    fraction: float
    far_tokens: list[FarToken] = field(default_factory=list)
    far_distance: int = THRESHOLDS[0]

    @property
    def farthest_distance(self) -> int | None:
        return None if self.farthest_index is None else self.position - self.farthest_index

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``bins`` as [lo, hi) with |relevance| share and signed sum."""
        b = self.bins
        return {
            "bins": [
                {
                    "from": int(b.edges[i]),
                    "to": int(b.edges[i + 1]),
                    "tokens": int(b.counts[i]),
                    "share": float(b.share[i]),
                    "relevance": float(b.signed[i]),
                }
                for i in range(len(b.counts))
            ],
            "share_beyond": {str(k): v for k, v in self.share_beyond.items()},
            "farthest": None
            if self.farthest_index is None
            else {"index": self.farthest_index, "distance": self.farthest_distance, "fraction_of_max": self.fraction},
            "far_tokens": {"min_distance": self.far_distance, "tokens": [t.to_dict() for t in self.far_tokens]},
        }


def summarize(
    relevance: np.ndarray,
    tokens: list[str] | None = None,
    *,
    thresholds: tuple[int, ...] = THRESHOLDS,
    fraction: float = FRACTION,
    k: int = TOP_K,
    far_distance: int | None = None,
) -> LongRange:
    """All long-range statistics of one relevance vector (shape (p,), the tokens before the target)."""
    r = np.asarray(relevance, dtype=np.float64)
    far = thresholds[0] if far_distance is None else far_distance
    return LongRange(
        position=len(r),
        bins=relevance_by_distance(r),
        share_beyond={int(t): share_beyond(r, t) for t in thresholds},
        farthest_index=farthest_relevant(r, fraction),
        fraction=fraction,
        far_tokens=far_tokens(r, tokens, min_distance=far, k=k),
        far_distance=far,
    )
