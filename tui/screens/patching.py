"""Patching: which layer at which position carries the answer from a clean prompt.

Clean and corrupted prompts (same number of tokens), the answer the clean prompt gives
and the wrong one the corrupted prompt pushes to. Run: a real sweep (one patched forward
pass per layer x position, with a progress bar, Esc cancels) next to the RelP estimate
(LRP attribution patching: two forwards and one backward for all sites). Both grids
share one cursor; the selected cell's patched prediction and both values show below.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Button, Input, Select, Static

from lrp_llm.text import compact

from ..backend import PatchRequest
from ..exporting import Export, patching_export
from ..widgets.heatgrid import HeatGrid
from ..widgets.legend import Legend
from ..widgets.literal import literal, styled
from ..widgets.text_input import TextInput
from .base import Command, ViewScreen

SITES = {"resid": "Residual stream", "attn": "Attention output", "mlp": "MLP output"}
METRIC_LABELS = {"recovery": "recovery", "logit_diff": "logit difference", "kl": "KL"}


class PatchingScreen(ViewScreen):
    VIEW_ID = "patching"

    BINDINGS = [
        Binding("ctrl+t", "next_metric", "Metric", id="patching.metric"),
        Binding("ctrl+l", "next_kind", "Site", id="patching.site"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.kind = "resid"
        self.metric = "recovery"

    def compose_body(self) -> ComposeResult:
        with Vertical(id="patch-box"):
            with Horizontal(classes="patch-row"):
                yield TextInput(
                    placeholder="Clean prompt, e.g. 'The capital of France is'", id="patch-clean", compact=True
                )
                yield TextInput(placeholder="answer, e.g. ' Paris'", id="patch-answer", compact=True)
            with Horizontal(classes="patch-row"):
                yield TextInput(
                    placeholder="Corrupted prompt, same length, e.g. 'The capital of Italy is'",
                    id="patch-corrupted",
                    compact=True,
                )
                yield TextInput(placeholder="wrong, e.g. ' Rome'", id="patch-wrong", compact=True)
            with Horizontal(classes="patch-row"):
                yield Select(
                    [(label, k) for k, label in SITES.items()],
                    value="resid",
                    allow_blank=False,
                    compact=True,
                    id="patch-site",
                )
                yield Static("", id="patch-baseline")
                yield Button("Run", id="patch-run", variant="primary", compact=True)
        with Horizontal(id="patch-body"):
            yield HeatGrid(id="patch-sweep")
            yield HeatGrid(id="patch-relp")
        yield Static("Run a sweep: fill in the four fields and press Enter.", id="patch-cell")
        yield Legend(id="patch-legend")

    def on_mount(self) -> None:
        self.query_one("#patch-box").border_title = "Patching (clean → corrupted, denoising)"
        self.query_one("#patch-sweep").border_title = "Sweep (real patching)"
        self.query_one("#patch-relp").border_title = "RelP estimate"
        self.query_one(Legend).unit = "max |value| of the sweep grid"
        self.watch(self.xai, "patching", self._show_result)

    def _value(self, selector: str) -> str:
        return self.query_one(selector, Input).value

    @on(Input.Submitted, "#patch-box Input")
    @on(Button.Pressed, "#patch-run")
    def _run(self) -> None:
        site = self.query_one("#patch-site", Select).value
        self.kind = site if isinstance(site, str) else "resid"
        self.xai.patch(
            PatchRequest(
                clean=self._value("#patch-clean"),
                corrupted=self._value("#patch-corrupted"),
                answer=self._value("#patch-answer"),
                wrong=self._value("#patch-wrong"),
                sites=(self.kind,),
            )
        )

    def _grids(self, result):
        """(sweep grid, estimate grid or None) for the current kind and metric."""
        kinds = {g.kind for g in result.grids}
        if self.kind not in kinds and kinds:
            self.kind = sorted(kinds)[0]
        metrics = [
            m
            for m in ("recovery", "logit_diff", "kl")
            if any(g.metric == m and g.kind == self.kind for g in result.grids)
        ]
        if self.metric not in metrics and metrics:
            self.metric = metrics[0]
        pick = {(g.method, g.kind, g.metric): g for g in result.grids if g.direction == "denoise"} or {
            (g.method, g.kind, g.metric): g for g in result.grids
        }
        sweep = pick.get(("sweep", self.kind, self.metric))
        estimate = pick.get(("relp", self.kind, self.metric)) or pick.get(("atp", self.kind, self.metric))
        if sweep is None:
            sweep, estimate = estimate, None
        return sweep, estimate

    def _show_result(self, result) -> None:
        if result is None:
            return
        b = result.baseline
        self.query_one("#patch-baseline", Static).update(
            styled(
                f"logit diff clean [b]{b['clean']['logit_diff']:+.2f}[/] · corrupted [b]{b['corrupted']['logit_diff']:+.2f}[/]"
                "  [dim]$answer vs $wrong[/]",
                answer=compact(result.answer),
                wrong=compact(result.wrong),
            )
        )
        sweep, estimate = self._grids(result)
        if sweep is None:
            return
        scale = float(max((abs(v) for v in sweep.values.ravel() if math.isfinite(v)), default=0.0))
        rows = [r.replace("layer.", "L").replace(f".{sweep.kind}", "") for r in sweep.rows]
        g1 = self.query_one("#patch-sweep", HeatGrid)
        g1.set_matrix(sweep.values, rows, sweep.columns, scale=scale, cursor=None)
        g1.border_title = literal(
            f"{'Sweep' if sweep.method == 'sweep' else sweep.method} · {SITES.get(sweep.kind, sweep.kind)}"
            f" · {METRIC_LABELS.get(sweep.metric, sweep.metric)}"
        )
        g2 = self.query_one("#patch-relp", HeatGrid)
        if estimate is not None:
            g2.set_matrix(estimate.values, rows, estimate.columns, cursor=None)
            r = next(
                (
                    c["pearson_r"]
                    for c in result.correlations
                    if c["kind"] == sweep.kind and c["method"] == estimate.method
                ),
                None,
            )
            g2.border_title = literal(
                f"{estimate.method.upper()} estimate" + (f" · r = {r:.2f} with the sweep" if r is not None else "")
            )
        else:
            g2.set_matrix(sweep.values[:0], [], [], cursor=None)
            g2.border_title = "no estimate in this result"
        self.query_one(Legend).scale = scale
        top = sweep.top(1)
        cell = (top[0][0], top[0][1]) if top else (0, 0)
        g1.cursor = cell
        if self.app.focused is None or isinstance(self.app.focused, Input):
            g1.focus()

    @on(HeatGrid.CellSelected, "#patch-sweep, #patch-relp")
    def _cell(self, event: HeatGrid.CellSelected) -> None:
        for grid in self.query(HeatGrid):
            if grid is not event.grid and grid.values.size and grid.cursor != (event.row, event.column):
                grid.cursor = (event.row, event.column)
        self._describe(event.row, event.column)

    def _describe(self, row: int, column: int) -> None:
        """The selected cell: the patched logit difference (answer - wrong) and the other metrics, per method."""
        result = self.xai.patching
        if result is None:
            return
        sweep, _ = self._grids(result)
        parts = [
            styled(
                f"[b]$site[/] at $token (position {column})",
                site=sweep.site(row, column),
                token=compact(sweep.columns[column]),
            )
        ]
        for metric in METRIC_LABELS:
            values = []
            for g in result.grids:
                same = g.kind == sweep.kind and g.direction == sweep.direction and g.values.shape == sweep.values.shape
                v = float(g.values[row, column])
                if same and g.metric == metric and math.isfinite(v):
                    values.append(f"{g.method} {0.0 if abs(v) < 5e-4 else v:+.3f}")  # no "-0.000"
            if values:
                name = "patched logit diff" if metric == "logit_diff" else METRIC_LABELS[metric]
                parts.append(literal(f"{name}: " + ", ".join(values)))
        self.query_one("#patch-cell", Static).update(Content(" · ").join(parts))

    def action_next_metric(self) -> None:
        metrics = list(METRIC_LABELS)
        self.metric = metrics[(metrics.index(self.metric) + 1) % len(metrics)]
        self._show_result(self.xai.patching)

    def action_next_kind(self) -> None:
        result = self.xai.patching
        kinds = sorted({g.kind for g in result.grids}) if result is not None else []
        if len(kinds) > 1:
            self.kind = kinds[(kinds.index(self.kind) + 1) % len(kinds)] if self.kind in kinds else kinds[0]
            self._show_result(result)

    def commands(self) -> Iterable[Command]:
        yield ("Run patching", "Sweep the chosen sites and estimate them with RelP", self._run)
        for m, label in METRIC_LABELS.items():
            if m != self.metric:
                yield (
                    f"Patching metric: {label}",
                    f"Show the {label} grids (Ctrl+T cycles)",
                    lambda m=m: self._use_metric(m),
                )

    def _use_metric(self, metric: str) -> None:
        self.metric = metric
        self._show_result(self.xai.patching)

    def export_target(self) -> Export | None:
        r = self.xai.patching
        return patching_export(r) if r is not None else None
