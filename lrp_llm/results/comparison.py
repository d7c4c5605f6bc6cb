"""Several methods' explanations of one answer token side by side (:class:`MethodComparison`):
their relevance, rank agreement (:mod:`lrp_llm.analyses.compare`) and, when measured, the
perturbation curves of each (:class:`lrp_llm.analyses.evaluate.Curves`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrp_llm.analyses.compare import TOP_K, PairScore, pair_scores
from lrp_llm.analyses.evaluate import STRATEGIES, Curves
from lrp_llm.results.base import Fields, JsonResult


@dataclass
class MethodComparison(JsonResult):
    """Explanations of the token ``tokens[position]`` (answer token ``target``, 0 = the first generated
    one) by each of ``methods``: ``relevance[i]`` has shape (position,), one value per earlier token.

    ``curves``: MoRF / LeRF curves per method (only the methods measured; removal ``strategy`` in
    ``steps`` steps).
    """

    SCHEMA = "xai-tui/comparison/1"

    model: str
    tokens: list[str]
    input_ids: list[int]
    prompt_length: int
    target: int
    position: int
    methods: list[str]
    relevance: list[np.ndarray]
    k: int = TOP_K
    curves: dict[str, Curves] = field(default_factory=dict)
    strategy: str = "zero"
    steps: int = 20
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.relevance = [np.asarray(r, dtype=np.float64) for r in self.relevance]

    @property
    def token(self) -> str:
        return self.tokens[self.position]

    def relevance_of(self, method: str) -> np.ndarray:
        return self.relevance[self.methods.index(method)]

    @property
    def pairs(self) -> list[PairScore]:
        """Rank correlation and top-k overlap of every pair of methods."""
        return pair_scores(dict(zip(self.methods, self.relevance)), self.k)

    def abpc(self, method: str) -> float | None:
        """ABPC of ``method``'s explanation (logit units), None when not measured."""
        c = self.curves.get(method)
        return c.abpc if c is not None else None

    def _fields(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "tokens": list(self.tokens),
            "input_ids": [int(i) for i in self.input_ids],
            "prompt_length": self.prompt_length,
            "target": self.target,
            "position": self.position,
            "token": self.token,
            "methods": list(self.methods),
            "relevance": [[float(x) for x in r] for r in self.relevance],
            "k": self.k,
            # derived, for readers of the file; recomputed from the relevance when read
            "pairs": [
                {"a": p.a, "b": p.b, "spearman": p.spearman, "top_k_overlap": p.overlap, "k": p.k} for p in self.pairs
            ],
            "strategy": self.strategy,
            "steps": self.steps,
            "faithfulness": {m: {**c.to_dict(), "abpc": c.abpc} for m, c in self.curves.items()},
            "meta": dict(self.meta),
        }

    @classmethod
    def _from_fields(cls, d: Fields) -> MethodComparison:
        tokens = d.texts("tokens")
        n = len(tokens)
        position = d.integer("position", low=1, high=n - 1)
        prompt_length = d.integer("prompt_length", low=1, high=position)
        methods = d.texts("methods")
        if not 2 <= len(methods) <= 3 or len(set(methods)) != len(methods):
            d.fail("methods", f"lists {len(methods)} methods; a comparison has two or three different ones")
        relevance = d.matrix("relevance", shape=(len(methods), position), dtype=np.float64)
        target = d.integer("target", low=0)
        if prompt_length + target != position:
            d.fail("target", f"is {target} but answer token {target} lies at {prompt_length + target}, not {position}")
        faith = d.obj("faithfulness") if d.has("faithfulness") else Fields({}, d.name("faithfulness"))
        curves = {}
        for m in faith.data:
            if m not in methods:
                faith.fail(m, f"is not one of the compared methods ({', '.join(methods)})")
            curves[m] = Curves.from_dict(faith.obj(m))
        return cls(
            model=d.text("model"),
            tokens=tokens,
            input_ids=d.integers("input_ids", length=n, because=f"the result has {n} tokens", low=0),
            prompt_length=prompt_length,
            target=target,
            position=position,
            methods=methods,
            relevance=list(relevance),
            k=d.integer("k", default=TOP_K, low=1),
            curves=curves,
            strategy=d.text("strategy", default="zero", choices=STRATEGIES),
            steps=d.integer("steps", default=20, low=1),
            meta=d.mapping("meta"),
        )


__all__ = ["MethodComparison"]
