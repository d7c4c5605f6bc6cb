"""Result dataclasses of a patching experiment: plain data read by the CLI, the TUI,
the HTML report and the tests alike (JSON through :class:`~lrp_llm.results.base.JsonResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrp_llm.errors import InputError
from lrp_llm.results.base import Fields, JsonResult, json_ready

DIRECTIONS = ("denoise", "noise")
GRID_KINDS = ("resid", "attn", "mlp", "mixer", "head", "neuron")
GRID_METHODS = ("sweep", "relp", "atp")
GRID_METRICS = ("logit_diff", "recovery", "kl")
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
    def from_dict(cls, d: Fields | dict[str, Any], n_tokens: int | None = None) -> Grid:
        """The grid from its JSON data, checked: known kind, method, direction and metric, values
        of shape (rows, columns), one position per column inside the ``n_tokens`` prompt tokens."""
        f = Fields.of(d)
        rows, columns = f.texts("rows"), f.texts("columns")
        positions = None
        if f.data.get("positions") is not None:
            positions = f.integers("positions", length=len(columns), because=f"there are {len(columns)} columns")
            for i, p in enumerate(positions):
                if n_tokens is not None and not -n_tokens <= p < n_tokens:
                    f.fail(f"positions[{i}]", f"is {p} but the prompts have {n_tokens} tokens")
        return cls(
            kind=f.text("kind", choices=GRID_KINDS),
            method=f.text("method", choices=GRID_METHODS),
            direction=f.text("direction", choices=DIRECTIONS),
            metric=f.text("metric", choices=GRID_METRICS),
            rows=rows,
            columns=columns,
            values=f.matrix(
                "values", (len(rows), len(columns)), because=f"the grid has {len(rows)} rows and {len(columns)} columns"
            ),
            positions=positions,
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
        base = self.baseline.get("corrupted" if grid.direction == "denoise" else "clean", {})
        if grid.metric == "recovery":
            return 0.0 if grid.direction == "denoise" else 1.0
        # a file may leave a baseline out (older versions wrote only the clean run's): NaN, not known
        return float(base.get(grid.metric, float("nan")))

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
    def _from_fields(cls, d: Fields) -> PatchingResult:
        meta = d.mapping("meta")
        if "created" in meta:  # files written before run_meta named the date "created"
            meta.setdefault("date", meta.pop("created"))
        clean = d.texts("clean_tokens")
        if not clean:
            d.fail("clean_tokens", "is empty: the result has no tokens to show")
        n = len(clean)
        same = f"the prompts have {n} tokens"
        runs = d.obj("baseline")
        # every view reads both runs' logit difference: a missing one is NaN, a number not known
        baseline = {run: {"logit_diff": float("nan"), **runs.number_map(run)} for run in ("clean", "corrupted")}
        baseline.update({run: runs.number_map(run) for run in runs.data if run not in baseline})
        grids = [Grid.from_dict(g, n) for g in d.objects("grids", [])]
        first: dict[str, int] = {}
        for i, g in enumerate(grids):  # the sweep and its estimates are drawn side by side, row by row
            j = first.setdefault(g.kind, i)
            if (g.rows, g.columns) != (grids[j].rows, grids[j].columns):
                d.fail(f"grids[{i}]", f"has other rows or columns than grids[{j}], the first {g.kind} grid")
        return cls(
            model=d.text("model"),
            clean_tokens=clean,
            corrupted_tokens=d.texts("corrupted_tokens", length=n, because=same),
            clean_ids=d.integers("clean_ids", length=n, because=same, low=0),
            corrupted_ids=d.integers("corrupted_ids", length=n, because=same, low=0),
            answer=d.text("answer"),
            wrong=d.text("wrong"),
            answer_id=d.integer("answer_id", low=0),
            wrong_id=d.integer("wrong_id", low=0),
            baseline=baseline,
            grids=grids,
            correlations=[
                {
                    **c.data,
                    "kind": c.optional_text("kind"),
                    "method": c.optional_text("method"),
                    "pearson_r": c.number("pearson_r"),
                }
                for c in d.objects("correlations", [])
            ],
            seconds=d.number("seconds", 0.0),
            timings=d.number_map("timings"),
            meta=meta,
        )
