"""Comparing attribution methods on one explained token: rank agreement and faithfulness.

Two explanations of the same token (one relevance value per earlier token each) agree
when they rank the inputs alike: the Spearman rank correlation (Pearson correlation of
the ranks, ties given their mean rank) measures it over all inputs, the top-k overlap
(share of the k most relevant inputs the two have in common) where it matters most.
Whether each explanation is *faithful* is measured by the perturbation curves of
:mod:`lrp_llm.analyses.evaluate` (MoRF / LeRF and their ABPC) for this one token.

Pure numpy except :func:`faithfulness`, which runs the model through
:func:`lrp_llm.analyses.evaluate.perturbation_curves`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np

from lrp_llm.errors import Cancelled, InputError, ShouldCancel

if TYPE_CHECKING:
    from lrp_llm.analyses.evaluate import Curves

TOP_K = 5


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values`` (ascending), tied values sharing their mean rank."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    out = np.empty(len(v), dtype=np.float64)
    sorted_v = v[order]
    start = 0
    while start < len(v):
        end = start
        while end + 1 < len(v) and sorted_v[end + 1] == sorted_v[start]:
            end += 1
        out[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two relevance vectors of one length (NaN when either is constant
    or shorter than 2: ranks that do not vary correlate with nothing)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"rank correlation needs two vectors of one length, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return float("nan")
    ra, rb = ranks(a) - (len(a) + 1) / 2, ranks(b) - (len(b) + 1) / 2
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def top_k(values: np.ndarray, k: int = TOP_K) -> list[int]:
    """Indices of the ``k`` largest values (most relevant first; ties: the earlier position first)."""
    order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")
    return [int(i) for i in order[: max(0, k)]]


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = TOP_K) -> float:
    """Share of the ``k`` most relevant inputs of ``a`` that are among those of ``b`` (0..1); with
    fewer than ``k`` inputs, ``k`` is their number."""
    if len(a) != len(b):
        raise InputError(f"top-k overlap needs two vectors of one length, got {len(a)} and {len(b)}")
    k = min(k, len(a))
    if k <= 0:
        return float("nan")
    return len(set(top_k(a, k)) & set(top_k(b, k))) / k


@dataclass(frozen=True)
class PairScore:
    """Agreement of two methods' explanations of one token."""

    a: str
    b: str
    spearman: float
    overlap: float  # top-k overlap, 0..1
    k: int  # the k used: the asked one, or the number of inputs when there are fewer


def pair_scores(relevance: Mapping[str, np.ndarray], k: int = TOP_K) -> list[PairScore]:
    """Every pair of the methods in ``relevance`` (in their order): rank correlation and top-k overlap."""
    return [
        PairScore(
            a,
            b,
            spearman(relevance[a], relevance[b]),
            top_k_overlap(relevance[a], relevance[b], k),
            min(k, len(relevance[a])),
        )
        for a, b in combinations(relevance, 2)
    ]


def removable_positions(
    input_ids: Sequence[int], position: int, special_ids: Sequence[int] = (), template: Sequence[int] = ()
) -> list[int]:
    """Positions before ``position`` that the perturbation may remove: every token except special ones
    (chat markup, BOS are the input's format, not its content) and the positions in ``template`` (the
    chat template's role headers and default system prompt, when given: ``evaluate.prepare_item``)."""
    special = {int(i) for i in special_ids}
    skip = {int(p) for p in template}
    return [i for i in range(position) if int(input_ids[i]) not in special and i not in skip]


def faithfulness(
    model,
    input_ids: Sequence[int],
    position: int,
    relevance: Mapping[str, np.ndarray],
    *,
    candidates: Sequence[int] | None = None,
    strategy: str = "zero",
    steps: int = 20,
    neutral_id: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: ShouldCancel | None = None,
) -> dict[str, Curves]:
    """MoRF / LeRF curves (:func:`lrp_llm.analyses.evaluate.perturbation_curves`) of the token
    ``input_ids[position]`` under each method's ``relevance`` (position,); ``progress(done, total)``
    after each method."""
    from lrp_llm.analyses.evaluate import perturbation_curves

    out: dict[str, Curves] = {}
    for done, (method, values) in enumerate(relevance.items()):
        if should_cancel is not None and should_cancel():
            raise Cancelled()
        out[method] = perturbation_curves(
            model,
            input_ids,
            position,
            np.asarray(values, dtype=np.float64),
            candidates=candidates,
            strategy=strategy,
            steps=steps,
            neutral_id=neutral_id,
        )
        if progress is not None:
            progress(done + 1, len(relevance))
    return out


__all__ = [
    "TOP_K",
    "PairScore",
    "faithfulness",
    "pair_scores",
    "ranks",
    "removable_positions",
    "spearman",
    "top_k",
    "top_k_overlap",
]
