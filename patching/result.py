"""Result dataclasses of a patching experiment: plain data read by the CLI, the TUI,
the HTML report and the tests alike (``to_json``/``from_json``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrp_llm.errors import InputError
from lrp_llm.results.attribution import write_atomic

SCHEMA = "xai-tui/patching/1"
DIRECTIONS = ("denoise", "noise")
DIRECTION_HELP = {
    "denoise": "clean -> corrupted: the corrupted run with one clean activation patched in",
    "noise": "corrupted -> clean: the clean run with one corrupted activation patched in",
}


@dataclass
class Grid:
    """One metric over sites: rows are layers, columns positions (or heads).

    ``rows[r]`` is the site name of row ``r`` (``layer.3.resid``; head grids
    ``layer.3.attn``), ``columns[c]`` the token at position ``c`` (head grids:
    ``head.0`` ...); :meth:`site` gives the site name of a cell. ``values`` has shape
    (n_rows, n_columns). ``method``: "sweep" (real patching), "relp" (LRP attribution
    patching) or "atp" (plain gradient attribution patching); estimates are linear
    predictions of the same metric.
    """

    kind: str  # resid | attn | mlp | mixer | head
    method: str  # sweep | relp | atp
    direction: str  # denoise | noise
    metric: str  # logit_diff | recovery | kl
    rows: list[str]
    columns: list[str]
    values: np.ndarray
    positions: list[int] | None = None  # token position of each column (position grids)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.shape != (len(self.rows), len(self.columns)):
            raise ValueError(f"grid values {self.values.shape} do not match {len(self.rows)} x {len(self.columns)}")

    @property
    def axis(self) -> str:
        return "head" if self.kind == "head" else "position"

    def site(self, row: int, column: int) -> str:
        if self.kind == "head":
            return f"{self.rows[row]}.head.{column}"
        return self.rows[row]

    def top(self, k: int = 5, *, centre: float = 0.0) -> list[tuple[int, int, float]]:
        """The ``k`` cells whose value is farthest from ``centre`` (e.g. the unpatched
        run's value, :meth:`PatchingResult.unpatched`): (row, column, value)."""
        flat = np.nan_to_num(np.abs(self.values.astype(np.float64) - centre), nan=-1.0).ravel()
        order = np.argsort(-flat, kind="stable")[:k]
        n = self.values.shape[1]
        return [(int(i // n), int(i % n), float(self.values.ravel()[i])) for i in order]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "method": self.method,
            "direction": self.direction,
            "metric": self.metric,
            "axes": ["layer", self.axis],
            "rows": list(self.rows),
            "columns": list(self.columns),
            "values": [[_num(v) for v in row] for row in self.values],
            "positions": None if self.positions is None else [int(p) for p in self.positions],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        values = np.asarray(
            [[float("nan") if v is None else float(v) for v in row] for row in d["values"]], dtype=np.float32
        ).reshape(len(d["rows"]), len(d["columns"]))
        return cls(
            kind=str(d["kind"]),
            method=str(d["method"]),
            direction=str(d["direction"]),
            metric=str(d["metric"]),
            rows=[str(r) for r in d["rows"]],
            columns=[str(c) for c in d["columns"]],
            values=values,
            positions=None if d.get("positions") is None else [int(p) for p in d["positions"]],
        )


def _num(v: float) -> float | None:
    v = float(v)
    return None if v != v else v  # NaN -> null: valid JSON everywhere


@dataclass
class PatchingResult:
    """Clean and corrupted prompts, the answer pair, their baseline metrics, the grids."""

    model: str
    clean_tokens: list[str]
    corrupted_tokens: list[str]
    clean_ids: list[int]
    corrupted_ids: list[int]
    answer: str
    wrong: str
    answer_id: int
    wrong_id: int
    baseline: dict[str, dict[str, float]]  # {"clean": {"logit_diff", "p_answer", "p_wrong"}, "corrupted": ...}
    grids: list[Grid] = field(default_factory=list)
    correlations: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def grid(self, kind: str, *, method: str = "sweep", direction: str = "denoise", metric: str = "recovery") -> Grid:
        for g in self.grids:
            if (g.kind, g.method, g.direction, g.metric) == (kind, method, direction, metric):
                return g
        have = ", ".join(sorted({f"{g.kind}/{g.method}/{g.direction}/{g.metric}" for g in self.grids}))
        raise InputError(f"no grid {kind}/{method}/{direction}/{metric} in this result; it has: {have}")

    def unpatched(self, grid: Grid) -> float:
        """The metric of the unpatched base run of ``grid``'s direction (what "no effect" reads)."""
        base = "corrupted" if grid.direction == "denoise" else "clean"
        if grid.metric == "logit_diff":
            return float(self.baseline[base]["logit_diff"])
        if grid.metric == "recovery":
            return 0.0 if grid.direction == "denoise" else 1.0
        return float(self.baseline[base].get("kl", float("nan")))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "clean_tokens": list(self.clean_tokens),
            "corrupted_tokens": list(self.corrupted_tokens),
            "clean_ids": [int(i) for i in self.clean_ids],
            "corrupted_ids": [int(i) for i in self.corrupted_ids],
            "answer": self.answer,
            "wrong": self.wrong,
            "answer_id": int(self.answer_id),
            "wrong_id": int(self.wrong_id),
            "baseline": {k: {m: _num(v) for m, v in d.items()} for k, d in self.baseline.items()},
            "directions": {d: DIRECTION_HELP[d] for d in sorted({g.direction for g in self.grids})},
            "grids": [g.to_dict() for g in self.grids],
            "correlations": [
                {k: (_num(v) if isinstance(v, float) else v) for k, v in c.items()} for c in self.correlations
            ],
            "seconds": self.seconds,
            "timings": dict(self.timings),
            "meta": dict(self.meta),
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PatchingResult:
        if d.get("schema") != SCHEMA:
            raise InputError(f"not a patching result (schema {d.get('schema')!r}, expected {SCHEMA!r})")

        def fl(v: Any) -> float:
            return float("nan") if v is None else float(v)

        return cls(
            model=str(d["model"]),
            clean_tokens=[str(t) for t in d["clean_tokens"]],
            corrupted_tokens=[str(t) for t in d["corrupted_tokens"]],
            clean_ids=[int(i) for i in d["clean_ids"]],
            corrupted_ids=[int(i) for i in d["corrupted_ids"]],
            answer=str(d["answer"]),
            wrong=str(d["wrong"]),
            answer_id=int(d["answer_id"]),
            wrong_id=int(d["wrong_id"]),
            baseline={k: {m: fl(v) for m, v in v2.items()} for k, v2 in d["baseline"].items()},
            grids=[Grid.from_dict(g) for g in d.get("grids", [])],
            correlations=[
                {k: (fl(v) if k == "pearson_r" else v) for k, v in c.items()} for c in d.get("correlations", [])
            ],
            seconds=float(d.get("seconds", 0.0)),
            timings={k: float(v) for k, v in d.get("timings", {}).items()},
            meta=dict(d.get("meta", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> PatchingResult:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> None:
        write_atomic(path, self.to_json(indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchingResult:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
