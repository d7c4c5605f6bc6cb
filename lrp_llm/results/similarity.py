"""The BiLRP explanation of a similarity score (:class:`SimilarityExplanation`): token-pair
interactions of two texts, computed by :mod:`lrp_llm.analyses.bilrp`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrp_llm.methods import method_names
from lrp_llm.results.base import REQUIRED, Fields, JsonResult


@dataclass
class SimilarityExplanation(JsonResult):
    """Why two texts are similar: token-pair interactions (rows = tokens of a, columns = tokens of b).

    ``interactions`` sum to ``interaction_sum``, which approximates the explained score:
    ``similarity`` (cosine) in mode "cosine", ``dot`` in mode "dot".
    """

    model: str
    method: str
    rules: str | None
    pooling: str
    mode: str
    text_a: str
    text_b: str
    tokens_a: list[str]
    tokens_b: list[str]
    interactions: np.ndarray
    similarity: float
    dot: float
    interaction_sum: float
    seconds: float
    special_a: list[bool] = field(default_factory=list)
    special_b: list[bool] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    SCHEMA = "xai-tui/similarity/1"

    def __post_init__(self) -> None:
        self.interactions = np.asarray(self.interactions, dtype=np.float64)
        if not self.special_a:
            self.special_a = [False] * len(self.tokens_a)
        if not self.special_b:
            self.special_b = [False] * len(self.tokens_b)

    @property
    def explained(self) -> float:
        """The score the interactions decompose."""
        return self.similarity if self.mode == "cosine" else self.dot

    @property
    def conservation(self) -> float:
        """Sum of interactions / explained score (1.0 = fully conserved)."""
        return self.interaction_sum / self.explained if self.explained else float("nan")

    def top_pairs(self, k: int = 10, *, skip_special: bool = True, sign: int = 1) -> list[tuple[int, int, float]]:
        """The ``k`` largest (``sign=1``) or most negative (``sign=-1``) interactions as ``(i, j, value)``."""
        m = self.interactions * sign
        keep = np.ones_like(m, dtype=bool)
        if skip_special:
            keep &= ~np.asarray(self.special_a, dtype=bool)[:, None]
            keep &= ~np.asarray(self.special_b, dtype=bool)[None, :]
        flat = np.where(keep, m, -np.inf).ravel()
        order = np.argsort(-flat, kind="stable")[: max(0, k)]
        n_b = m.shape[1]
        return [(int(f // n_b), int(f % n_b), float(self.interactions.flat[f])) for f in order if np.isfinite(flat[f])]

    def _fields(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "method": self.method,
            "rules": self.rules,
            "pooling": self.pooling,
            "mode": self.mode,
            "text_a": self.text_a,
            "text_b": self.text_b,
            "tokens_a": list(self.tokens_a),
            "tokens_b": list(self.tokens_b),
            "special_a": [bool(s) for s in self.special_a],
            "special_b": [bool(s) for s in self.special_b],
            "interactions": self.interactions,
            "similarity": self.similarity,
            "dot": self.dot,
            "interaction_sum": self.interaction_sum,
            "conservation": self.conservation,
            "seconds": self.seconds,
            "timings": dict(self.timings),
            "meta": dict(self.meta),
        }

    @classmethod
    def _from_fields(cls, d: Fields) -> SimilarityExplanation:
        tokens_a, tokens_b = d.texts("tokens_a"), d.texts("tokens_b")
        for key, tokens in (("tokens_a", tokens_a), ("tokens_b", tokens_b)):
            if not tokens:
                d.fail(key, "is empty: the result has no tokens to show")
        shape = (len(tokens_a), len(tokens_b))
        matrix = d.matrix(
            "interactions", shape, because=f"the texts have {shape[0]} and {shape[1]} tokens", dtype=np.float64
        )
        return cls(
            model=d.text("model", ""),
            method=d.text("method", "bilrp", choices=method_names("encoder")),
            rules=d.optional_text("rules"),
            pooling=d.text("pooling", "mean"),
            mode=d.text("mode", "cosine", choices=("cosine", "dot")),
            text_a=d.text("text_a", ""),
            text_b=d.text("text_b", ""),
            tokens_a=tokens_a,
            tokens_b=tokens_b,
            interactions=matrix,
            similarity=d.number("similarity", REQUIRED),
            dot=d.number("dot", REQUIRED),
            interaction_sum=d.number("interaction_sum", float(matrix.sum())),
            seconds=d.number("seconds", 0.0),
            special_a=d.flags(
                "special_a",
                [],
                length=shape[0] if d.has("special_a") else None,
                because=f"text a has {shape[0]} tokens",
            ),
            special_b=d.flags(
                "special_b",
                [],
                length=shape[1] if d.has("special_b") else None,
                because=f"text b has {shape[1]} tokens",
            ),
            timings=d.number_map("timings"),
            meta=d.mapping("meta"),
        )


__all__ = ["SimilarityExplanation"]
