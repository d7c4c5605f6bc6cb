"""Result dataclasses: plain data (arrays, token strings, metadata) read by the CLI,
the TUI, the exporters and the tests alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrp_llm.results.base import JsonResult, as_float, float_array


@dataclass
class TargetRelevance:
    """The explanation of one token.

    ``relevance`` has shape (position,): one value per token before ``position``.
    """

    position: int
    token: str
    id: int
    logit: float
    probability: float
    relevance: np.ndarray
    relevance_sum: float = float("nan")
    # Encoder-decoders: relevance of each encoder (source) token; ``relevance`` is then
    # the decoder side and ``relevance_sum`` adds both.
    source_relevance: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.relevance = np.asarray(self.relevance, dtype=np.float32)
        if self.source_relevance is not None:
            self.source_relevance = np.asarray(self.source_relevance, dtype=np.float32)
        if self.relevance_sum != self.relevance_sum:  # NaN: not given
            self.relevance_sum = float(self.relevance.astype(np.float64).sum())

    @property
    def conservation(self) -> float:
        """Sum of input relevance / explained logit (1.0 = fully conserved)."""
        return self.relevance_sum / self.logit if self.logit else float("nan")

    def top(self, k: int = 5) -> list[int]:
        """Indices of the ``k`` most relevant (largest positive) earlier tokens."""
        order = np.argsort(-self.relevance, kind="stable")
        return [int(i) for i in order[:k]]

    def to_dict(self) -> dict[str, Any]:
        d = {
            "position": self.position,
            "token": self.token,
            "id": self.id,
            "logit": self.logit,
            "probability": self.probability,
            "relevance": [float(x) for x in self.relevance],
            "relevance_sum": self.relevance_sum,
            "conservation": self.conservation,
        }
        if self.source_relevance is not None:
            d["source_relevance"] = [float(x) for x in self.source_relevance]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetRelevance:
        return cls(
            position=int(d["position"]),
            token=str(d["token"]),
            id=int(d["id"]),
            logit=as_float(d["logit"]),
            probability=as_float(d.get("probability")),
            relevance=float_array(d["relevance"]),
            relevance_sum=as_float(d.get("relevance_sum")),
            source_relevance=float_array(d["source_relevance"]) if "source_relevance" in d else None,
        )


@dataclass
class Attribution(JsonResult):
    """Explanations of one or more tokens of one sequence (prompt + answer)."""

    SCHEMA = "xai-tui/attribution/1"

    model: str
    method: str
    tokens: list[str]
    input_ids: list[int]
    prompt_length: int
    targets: list[TargetRelevance]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    # Encoder-decoders: the encoder's tokens; ``tokens`` are then the decoder's.
    source_tokens: list[str] | None = None
    source_ids: list[int] | None = None

    @property
    def answer(self) -> str:
        return "".join(self.tokens[self.prompt_length :])

    @property
    def prompt_tokens(self) -> list[str]:
        return self.tokens[: self.prompt_length]

    def matrix(self) -> np.ndarray:
        """(n_targets, n_tokens) relevance, zero at and after each target's position."""
        out = np.zeros((len(self.targets), len(self.tokens)), dtype=np.float32)
        for i, t in enumerate(self.targets):
            out[i, : t.position] = t.relevance
        return out

    def _fields(self) -> dict[str, Any]:
        d = {
            "model": self.model,
            "method": self.method,
            "tokens": list(self.tokens),
            "input_ids": [int(i) for i in self.input_ids],
            "prompt_length": self.prompt_length,
            "seconds": self.seconds,
            "timings": dict(self.timings),
            "meta": dict(self.meta),
            "targets": [t.to_dict() for t in self.targets],
        }
        if self.source_tokens is None:  # causal LMs: long-range statistics per target (lrp_llm.analyses.longrange)
            from lrp_llm.analyses.longrange import summarize

            for t, td in zip(self.targets, d["targets"]):
                td["longrange"] = summarize(t.relevance, self.tokens[: t.position]).to_dict()
        if self.source_tokens is not None:
            d["source_tokens"] = list(self.source_tokens)
            d["source_ids"] = [int(i) for i in self.source_ids or []]
        return d

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> Attribution:
        return cls(
            model=str(d["model"]),
            method=str(d["method"]),
            tokens=[str(t) for t in d["tokens"]],
            input_ids=[int(i) for i in d["input_ids"]],
            prompt_length=int(d["prompt_length"]),
            targets=[TargetRelevance.from_dict(t) for t in d["targets"]],
            seconds=float(d.get("seconds", 0.0)),
            timings={k: float(v) for k, v in d.get("timings", {}).items()},
            meta=dict(d.get("meta", {})),
            source_tokens=[str(t) for t in d["source_tokens"]] if "source_tokens" in d else None,
            source_ids=[int(i) for i in d["source_ids"]] if "source_ids" in d else None,
        )
