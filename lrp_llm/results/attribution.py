"""Result dataclasses: plain data (arrays, token strings, metadata) read by the CLI,
the TUI, the exporters and the tests alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrp_llm.methods import method_names
from lrp_llm.results.base import REQUIRED, Fields, JsonResult
from lrp_llm.results.components import ComponentRelevance


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
    # Which layers, heads and neurons carried the token (explain(..., components=True)).
    components: ComponentRelevance | None = None

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

    def side_shares(self) -> tuple[float, float]:
        """Encoder-decoders: (source, decoder) shares of the relevance, Σ|R| of each side over
        Σ|R| of both (they add to 1; NaN when all is 0). Absolute values, so relevance that speaks
        against the token counts as used. Causal LMs: (0, 1)."""
        decoder = float(np.abs(self.relevance.astype(np.float64)).sum())
        if self.source_relevance is None:
            return (0.0, 1.0) if decoder else (float("nan"), float("nan"))
        source = float(np.abs(self.source_relevance.astype(np.float64)).sum())
        total = source + decoder
        return (source / total, decoder / total) if total else (float("nan"), float("nan"))

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
        if self.components is not None:
            d["components"] = self.components.to_dict()
        return d

    @classmethod
    def from_dict(
        cls, d: Fields | dict[str, Any], tokens: list[str] | None = None, source_tokens: list[str] | None = None
    ) -> TargetRelevance:
        """The target from its JSON data, checked against the ``tokens`` (and encoder-decoders'
        ``source_tokens``) of its result when given: a position inside the tokens and >= 1, one
        relevance value per earlier token, one source value per source token."""
        f = Fields.of(d)
        n = None if tokens is None else len(tokens)
        position = f.integer("position", low=1)
        if n is not None and position >= n:
            f.fail("position", f"is {position} but the result has {n} tokens (positions 1 to {n - 1} can be explained)")
        token = f.text("token")
        if tokens is not None and token != tokens[position]:
            f.fail("token", f"is {token!r} but the token at position {position} is {tokens[position]!r}")
        source = None
        if f.has("source_relevance"):
            if source_tokens is None and tokens is not None:
                f.fail("source_relevance", "is given but the result has no source_tokens")
            m = None if source_tokens is None else len(source_tokens)
            source = f.numbers("source_relevance", length=m, because=f"the source has {m} tokens")
        return cls(
            position=position,
            token=token,
            id=f.integer("id", low=0),
            logit=f.number("logit", default=REQUIRED),
            probability=f.number("probability"),
            relevance=f.numbers("relevance", length=position, because=f"the target is at position {position}"),
            relevance_sum=f.number("relevance_sum"),
            source_relevance=source,
            components=ComponentRelevance.from_dict(f.obj("components"), position) if f.has("components") else None,
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
    def _from_fields(cls, d: Fields) -> Attribution:
        tokens = d.texts("tokens")
        if not tokens:
            d.fail("tokens", "is empty: the result has no tokens to show")
        ids = d.integers("input_ids", length=len(tokens), because=f"there are {len(tokens)} tokens", low=0)
        source_tokens = source_ids = None
        if d.has("source_tokens"):
            source_tokens = d.texts("source_tokens")
            n = len(source_tokens)
            if d.has("source_ids"):
                source_ids = d.integers("source_ids", length=n, because=f"there are {n} source tokens", low=0)
        targets = []
        for i, t in enumerate(d.objects("targets", nonempty=True)):
            target = TargetRelevance.from_dict(t, tokens, source_tokens)
            if target.id != ids[target.position]:
                d.fail(f"targets[{i}].id", f"is {target.id} but input_ids[{target.position}] is {ids[target.position]}")
            targets.append(target)
        return cls(
            model=d.text("model"),
            method=d.text("method", choices=_TOKEN_METHODS),
            tokens=tokens,
            input_ids=ids,
            prompt_length=d.integer("prompt_length", low=0, high=len(tokens)),
            targets=targets,
            seconds=d.number("seconds", 0.0),
            timings=d.number_map("timings"),
            meta=d.mapping("meta"),
            source_tokens=source_tokens,
            source_ids=source_ids,
        )


# the methods an Attribution can name: those of causal LMs and encoder-decoders
_TOKEN_METHODS = tuple(dict.fromkeys((*method_names("causal-lm"), *method_names("seq2seq"))))
