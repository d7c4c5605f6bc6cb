"""Result dataclasses of a patching experiment: plain data read by the CLI, the TUI,
the HTML report and the tests alike (JSON through :class:`~lrp_llm.results.base.JsonResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrp_llm.errors import InputError
from lrp_llm.results.base import JsonResult, as_float, float_array, json_ready

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
            "values": json_ready(self.values),
            "positions": None if self.positions is None else [int(p) for p in self.positions],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        values = float_array(d["values"]).reshape(len(d["rows"]), len(d["columns"]))
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


@dataclass
class PatchingResult(JsonResult):
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

    SCHEMA = "xai-tui/patching/1"

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

    def _fields(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "clean_tokens": list(self.clean_tokens),
            "corrupted_tokens": list(self.corrupted_tokens),
            "clean_ids": [int(i) for i in self.clean_ids],
            "corrupted_ids": [int(i) for i in self.corrupted_ids],
            "answer": self.answer,
            "wrong": self.wrong,
            "answer_id": int(self.answer_id),
            "wrong_id": int(self.wrong_id),
            "baseline": self.baseline,
            "directions": {d: DIRECTION_HELP[d] for d in sorted({g.direction for g in self.grids})},
            "grids": [g.to_dict() for g in self.grids],
            "correlations": self.correlations,
            "seconds": self.seconds,
            "timings": dict(self.timings),
            "meta": dict(self.meta),
        }

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> PatchingResult:
        meta = dict(d.get("meta", {}))
        if "created" in meta:  # files written before run_meta named the date "created"
            meta.setdefault("date", meta.pop("created"))
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
            baseline={k: {m: as_float(v) for m, v in v2.items()} for k, v2 in d["baseline"].items()},
            grids=[Grid.from_dict(g) for g in d.get("grids", [])],
            correlations=[
                {k: (as_float(v) if k == "pearson_r" else v) for k, v in c.items()} for c in d.get("correlations", [])
            ],
            seconds=float(d.get("seconds", 0.0)),
            timings={k: float(v) for k, v in d.get("timings", {}).items()},
            meta=meta,
        )
