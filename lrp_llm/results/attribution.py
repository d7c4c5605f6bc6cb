"""Result dataclasses: plain data (arrays, token strings, metadata) read by the CLI,
the TUI, the exporters and the tests alike."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "xai-tui/attribution/1"


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
            logit=float(d["logit"]),
            probability=float(d.get("probability", float("nan"))),
            relevance=np.asarray(d["relevance"], dtype=np.float32),
            relevance_sum=float(d.get("relevance_sum", float("nan"))),
            source_relevance=np.asarray(d["source_relevance"], dtype=np.float32) if "source_relevance" in d else None,
        )


@dataclass
class Attribution:
    """Explanations of one or more tokens of one sequence (prompt + answer)."""

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

    def to_dict(self) -> dict[str, Any]:
        d = {
            "schema": SCHEMA,
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

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attribution:
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

    @classmethod
    def from_json(cls, text: str) -> Attribution:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> None:
        write_atomic(path, self.to_json(indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Attribution:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        # mkstemp makes the file private (0600); give it the permissions open() would (0666 - umask),
        # so a report meant for sharing is readable like any other file the user writes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
