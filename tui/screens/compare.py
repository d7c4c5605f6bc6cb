"""Compare: two or three methods on the same answer token.

The answer shown in the Ask view is explained again with each chosen method (default
AttnLRP, CP-LRP, integrated gradients; keys 1-8 toggle the model's methods), in a worker
with progress that Esc cancels; each method is computed once per answer. For the selected
answer token (←/→, shared with the Ask view) the input is shown once per method, side by
side, each coloured on its own scale; above them the Spearman rank correlation and the
top-5 overlap of every pair (:mod:`lrp_llm.analyses.compare`). ``f`` measures the
faithfulness of this one explanation per method: MoRF / LeRF perturbation curves and their
ABPC (:func:`lrp_llm.analyses.evaluate.perturbation_curves`), in a worker with progress.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.message import Message
from textual.widgets import Static
from textual.worker import WorkerState, get_current_worker

from lrp_llm.analyses.compare import TOP_K, PairScore, pair_scores
from lrp_llm.methods import label
from lrp_llm.text import compact

from ..exporting import Export
from ..messages import JobProgress
from ..widgets.literal import literal
from ..widgets.tokenflow import AnswerTokens, TokenFlow
from .base import Command, ViewScreen

if TYPE_CHECKING:
    from lrp_llm.analyses.evaluate import Curves
    from lrp_llm.results.attribution import Attribution
    from lrp_llm.results.comparison import MethodComparison

    from ..backend import ModelBackend

DEFAULT_METHODS = ("attnlrp", "cp-lrp", "integrated-gradients")
MAX_METHODS = 3
MAX_KEYS = 8  # methods reachable by the digit keys
FAITHFULNESS_STEPS = 20  # points of each perturbation curve, as `xai-tui evaluate` by default
FAITHFULNESS_STRATEGY = "zero"
SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], lo: float, hi: float, width: int) -> str:
    """``values`` resampled to ``width`` points as block characters, ``lo``..``hi`` mapped to the 8 heights."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return ""
    picks = v[np.round(np.linspace(0, len(v) - 1, min(width, len(v)))).astype(int)]
    span = hi - lo if hi > lo else 1.0
    levels = np.clip(np.round((picks - lo) / span * (len(SPARKS) - 1)), 0, len(SPARKS) - 1).astype(int)
    return "".join(SPARKS[i] for i in levels)


class CompareScreen(ViewScreen):
    VIEW_ID = "compare"

    BINDINGS = [
        Binding("f", "faithfulness", "Faithfulness", id="compare.faithfulness"),
        Binding("c", "compute", "Compute", id="compare.compute", show=False),
        *(
            Binding(
                str(i + 1), f"toggle_method({i})", f"Toggle method {i + 1}", id=f"compare.method{i + 1}", show=False
            )
            for i in range(MAX_KEYS)
        ),
    ]

    @dataclass
    class MethodExplained(Message):
        """The answer explained with one more method (from the worker)."""

        job: int
        method: str
        attribution: Attribution
        last: bool  # the job's last method

    @dataclass
    class FaithfulnessMeasured(Message):
        """Perturbation curves of each method's explanation of answer token ``target``."""

        job: int
        key: tuple[int, ...]
        target: int
        curves: dict[str, Curves]

    def __init__(self) -> None:
        super().__init__()
        self.selected: list[str] = []
        self._answer: tuple[int, ...] = ()  # input ids of the answer the cache belongs to
        self._cache: dict[str, Attribution] = {}  # method -> the answer explained with it
        self._curves: dict[tuple[int, str], Curves] = {}  # (answer token, method) -> curves
        self._busy: int | None = None  # the job of the running worker (one at a time: they share the model)
        self.pairs: list[PairScore] = []
        """Agreement of every pair of the shown methods for the selected token (what the view shows)."""

    def compose_body(self) -> ComposeResult:
        yield AnswerTokens(
            id="cmp-answer", placeholder="No explanation yet: ask a question in the Ask & explain view (F2)."
        )
        yield Static("", id="cmp-methods")
        yield Static("", id="cmp-scores")
        with Horizontal(id="cmp-panels"):
            for i in range(MAX_METHODS):
                yield TokenFlow(id=f"cmp-p{i}", placeholder="…")

    def on_mount(self) -> None:
        self.selected = self._default_methods()
        self.watch(self.xai, "attribution", self._attribution_changed)
        self.watch(self.xai, "target", self._show_target, init=False)

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self._attribution_changed(self.xai.attribution)

    # ------------------------------------------------------------ methods
    def _default_methods(self) -> list[str]:
        offered = self.xai.available_methods
        chosen = [m for m in DEFAULT_METHODS if m in offered]
        chosen += [m for m in offered if m not in chosen][: max(0, 2 - len(chosen))]
        return chosen

    def _answer_of(self) -> Attribution | None:
        """The app's explanation when it is a finished one (not partial), else None."""
        a = self.xai.attribution
        if a is None or not a.targets or a.meta.get("partial") or a.source_tokens is not None:
            return None
        return a

    def _attribution_changed(self, _: Any = None) -> None:
        a = self._answer_of()
        if a is not None:
            key = tuple(a.input_ids)
            if key != self._answer:
                self._answer, self._cache, self._curves = key, {}, {}
            self._cache.setdefault(a.method, a)
        self.selected = [m for m in self.selected if m in self.xai.available_methods] or self._default_methods()
        self._show_methods()
        self._show_answer()
        if self.is_current:
            self.action_compute()

    def action_toggle_method(self, index: int) -> None:
        offered = self.xai.available_methods
        if index >= len(offered):
            return
        m = offered[index]
        if m in self.selected:
            if len(self.selected) <= 2:
                self.xai.show_error("a comparison needs two methods; choose another one before removing one")
                return
            self.selected.remove(m)
        else:
            if len(self.selected) >= MAX_METHODS:
                self.xai.show_error(f"at most {MAX_METHODS} methods side by side; remove one first (its number key)")
                return
            self.selected.append(m)
        self._show_methods()
        self._show_target()
        self.action_compute()

    def _show_methods(self) -> None:
        parts = []
        for i, m in enumerate(self.xai.available_methods[:MAX_KEYS]):
            mark = "✓" if m in self.selected else " "
            done = "" if m not in self.selected or m in self._cache else "…"
            style = "b" if m in self.selected else "dim"
            parts.append(f"[{style}]{i + 1}{mark}{label(m)}{done}[/]")
        self.query_one("#cmp-methods", Static).update(Content.from_markup(" " + "  ".join(parts)))

    # ------------------------------------------------------------ computing
    def missing(self) -> list[str]:
        """Selected methods not yet computed for the current answer."""
        return [m for m in self.selected if m not in self._cache]

    def action_compute(self) -> None:
        """Explain the answer with every selected method not computed yet (in a worker)."""
        app = self.xai
        a = self._answer_of()
        missing = self.missing()
        if a is None or not missing:
            return
        if app.backend is None or not app.backend.loaded:
            self.query_one("#cmp-scores", Static).update(
                literal(" Comparing methods needs the model; press Ctrl+O to load it.")
            )
            return
        if self.busy():
            return  # the running job computes the rest when it ends (_job_ended)
        job = self._busy = app._new_job("compare")
        app.progress = (f"explaining with {label(missing[0])}", 0, len(missing) * len(a.targets))
        app.status = (f"explaining with {', '.join(label(m) for m in missing)} … (Esc cancels)", "busy")
        backend = app.backend
        app.run_worker(
            lambda: self._explain_worker(job, backend, a, missing),
            thread=True,
            group="compare",
            exit_on_error=False,
        )

    def busy(self) -> bool:
        """Whether a job of this view is running (not cancelled, not failed)."""
        app = self.xai
        alive = (WorkerState.PENDING, WorkerState.RUNNING)
        return (
            self._busy is not None
            and app._live(self._busy, "compare")
            and any(w.group == "compare" and w.state in alive for w in app.workers)
        )

    def _job_ended(self) -> None:
        """A job's last result arrived: compute what was chosen meanwhile, or say that all is there."""
        self._busy = None
        if self.missing():
            self.action_compute()
        else:
            self.xai.progress = None

    def _explain_worker(self, job: int, backend: ModelBackend, a: Attribution, methods: list[str]) -> None:
        worker = get_current_worker()
        n = len(a.targets)
        for i, m in enumerate(methods):

            def progress(done: int, total: int, i: int = i, m: str = m) -> None:
                self.post_message(JobProgress(job, f"explaining with {label(m)}", i * n + done, len(methods) * n))

            result = backend.reexplain(a, m, progress=progress, should_cancel=lambda: worker.is_cancelled)
            self.post_message(self.MethodExplained(job, m, result, last=i == len(methods) - 1))

    @on(JobProgress)
    def _job_progress(self, message: JobProgress) -> None:
        # The workers post progress here, to the queue their results go to: sent to the app's own
        # queue, a last progress message could be handled after the result and show a finished job as busy.
        message.stop()
        self.xai.on_job_progress(message)

    @on(MethodExplained)
    def _method_explained(self, message: MethodExplained) -> None:
        app = self.xai
        if not app._live(message.job, "compare"):
            return
        if tuple(message.attribution.input_ids) == self._answer:  # else: a new answer came meanwhile
            self._cache[message.method] = message.attribution
            self._show_methods()
            self._show_target()
        if message.last:
            self._job_ended()
        if not self.busy() and not self.missing():
            app.status = (
                f"{' · '.join(label(m) for m in self.selected)} compared; ←/→ move over the answer, "
                "f measures the faithfulness of this token",
                "info",
            )

    def action_faithfulness(self) -> None:
        """MoRF / LeRF curves and ABPC of each shown method's explanation of the selected token (in a worker)."""
        app = self.xai
        a = self._answer_of()
        if a is None:
            app.show_error("nothing to measure yet; ask a question in the Ask & explain view (F2) first")
            return
        if self.missing() or self.busy():
            app.show_error("the methods are still being computed; measure faithfulness when they are done")
            return
        if app.backend is None or not app.backend.loaded:
            app.show_error("measuring faithfulness needs the model; press Ctrl+O to load it")
            return
        t = self._target(a)
        relevance = {m: self._cache[m].targets[t].relevance for m in self.selected}
        job = self._busy = app._new_job("compare")
        app.progress = ("faithfulness", 0, len(relevance))
        app.status = (f"faithfulness of {len(relevance)} explanations … (Esc cancels)", "busy")
        backend = app.backend
        app.run_worker(
            lambda: self._faithfulness_worker(job, backend, a, t, relevance),
            thread=True,
            group="compare",
            exit_on_error=False,
        )

    def _faithfulness_worker(
        self, job: int, backend: ModelBackend, a: Attribution, t: int, relevance: dict[str, np.ndarray]
    ) -> None:
        from lrp_llm.analyses.compare import faithfulness, removable_positions

        worker = get_current_worker()
        position = a.targets[t].position
        with backend.lock:  # the model is shared with the other views' workers
            special = getattr(backend.tokenizer, "all_special_ids", None) or []
            curves = faithfulness(
                backend.model,
                a.input_ids,
                position,
                relevance,
                candidates=removable_positions(a.input_ids, position, special),
                strategy=FAITHFULNESS_STRATEGY,
                steps=FAITHFULNESS_STEPS,
                progress=lambda done, total: self.post_message(JobProgress(job, "faithfulness", done, total)),
                should_cancel=lambda: worker.is_cancelled,
            )
        self.post_message(self.FaithfulnessMeasured(job, tuple(a.input_ids), t, curves))

    @on(FaithfulnessMeasured)
    def _faithfulness_measured(self, message: FaithfulnessMeasured) -> None:
        app = self.xai
        if not app._live(message.job, "compare"):
            return
        if message.key == self._answer:  # else: a new answer came meanwhile
            for m, c in message.curves.items():
                self._curves[(message.target, m)] = c
            best = max(message.curves, key=lambda m: message.curves[m].abpc)
            app.status = (
                f"faithfulness measured; largest ABPC: {label(best)} ({message.curves[best].abpc:.3f})",
                "info",
            )
            self._show_target()
        self._job_ended()

    # ------------------------------------------------------------ showing
    def _target(self, a: Attribution) -> int:
        return max(0, min(self.xai.target, len(a.targets) - 1))

    def _show_answer(self) -> None:
        answer = self.query_one("#cmp-answer", AnswerTokens)
        a = self._answer_of()
        if a is None:
            answer.set_answer([], None)
            answer.border_title = "Answer"
            for i in range(MAX_METHODS):
                self.query_one(f"#cmp-p{i}", TokenFlow).clear()
            self.pairs = []
            self.query_one("#cmp-scores", Static).update("")
            return
        answer.set_answer(a.tokens[a.prompt_length :], self._target(a), len(a.targets))
        self._show_target()

    def curves(self, target: int | None = None) -> dict[str, Curves]:
        """The measured curves of the shown methods for answer token ``target`` (default: the selected one)."""
        a = self._answer_of()
        if a is None:
            return {}
        t = self._target(a) if target is None else target
        return {m: self._curves[(t, m)] for m in self.selected if (t, m) in self._curves}

    def _show_target(self, _: Any = None) -> None:
        a = self._answer_of()
        if a is None:
            return
        t = self._target(a)
        tr = a.targets[t]
        answer = self.query_one("#cmp-answer", AnswerTokens)
        if answer.cursor != t:
            answer.set_answer(answer.tokens, t, len(a.targets))
        answer.border_title = f"Answer · token {t + 1}/{len(a.targets)} · ←/→ or mouse"
        answer.border_subtitle = literal(compact(tr.token))
        ready = {m: self._cache[m].targets[t].relevance for m in self.selected if m in self._cache}
        for i in range(MAX_METHODS):
            panel = self.query_one(f"#cmp-p{i}", TokenFlow)
            panel.display = i < len(self.selected)
            if i >= len(self.selected):
                continue
            m = self.selected[i]
            panel.border_title = label(m)
            if m in ready:
                panel.set_tokens(a.tokens, ready[m], target=tr.position, dim_from=tr.position + 1)
                # after the layout: a panel just shown (a method added) has no size yet
                self.call_after_refresh(panel.scroll_to_token, tr.position)
                panel.border_subtitle = f"max |R| {panel.scale:.3g}"
            else:
                panel.set_tokens([])
                panel.placeholder = "computing …"
                panel.border_subtitle = ""
        self.pairs = pair_scores(ready, TOP_K) if len(ready) >= 2 else []
        self._show_scores(t)

    def _show_scores(self, t: int) -> None:
        width = max((len(label(m)) for m in self.selected), default=0)
        wide = self.size.width >= 96
        names = [f"{label(p.a)} ↔ {label(p.b)}" for p in self.pairs]
        pad = max((len(n) for n in names), default=0)
        rho, top = ("Spearman ρ", "top-{k} overlap") if wide else ("ρ", "top-{k}")
        lines = [
            f" {name:<{pad}}  {rho} [b]{p.spearman:+.3f}[/]   {top.format(k=p.k)} [b]{round(p.overlap * p.k)}/{p.k}[/]"
            for name, p in zip(names, self.pairs)
        ]
        curves = self.curves(t)
        if curves:
            values = [float(v) for c in curves.values() for v in (*c.morf_logit, *c.lerf_logit)]
            lo, hi = min(values), max(values)
            spark = 21 if wide else 12
            for m, c in curves.items():
                lines.append(
                    f" {label(m):<{width}}  MoRF [red]{sparkline(c.morf_logit, lo, hi, spark)}[/]  "
                    f"LeRF [blue]{sparkline(c.lerf_logit, lo, hi, spark)}[/]  ABPC [b]{c.abpc:+.3f}[/]"
                )
        elif self.pairs:
            lines.append(" [dim]f: faithfulness of this token (MoRF / LeRF curves, ABPC)[/]")
        self.query_one("#cmp-scores", Static).update(Content.from_markup("\n".join(lines)))

    @on(AnswerTokens.CursorMoved, "#cmp-answer")
    def _cursor_moved(self, event: AnswerTokens.CursorMoved) -> None:
        self.xai.target = event.index

    # ------------------------------------------------------------ palette, export
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "toggle_method":
            return int(parameters[0]) < len(self.xai.available_methods)  # type: ignore[call-overload]
        return True

    def commands(self) -> Iterable[Command]:
        yield (
            "Faithfulness of this token",
            "MoRF / LeRF perturbation curves and ABPC of each method's explanation (f)",
            self.action_faithfulness,
        )
        for i, m in enumerate(self.xai.available_methods[:MAX_KEYS]):
            verb = "Remove" if m in self.selected else "Add"
            yield (
                f"{verb} method: {label(m)}",
                f"Compare with or without {label(m)} ({i + 1})",
                lambda i=i: self.action_toggle_method(i),
            )
        if self.missing():
            yield (
                "Compute the methods",
                "Explain the answer with the chosen methods not computed yet (c)",
                self.action_compute,
            )

    def comparison(self) -> MethodComparison | None:
        """The comparison on screen (selected token, computed methods, measured curves) as a result."""
        from lrp_llm.results.base import run_meta
        from lrp_llm.results.comparison import MethodComparison

        a = self._answer_of()
        if a is None or self.missing():
            return None
        t = self._target(a)
        return MethodComparison(
            model=a.model,
            tokens=list(a.tokens),
            input_ids=list(a.input_ids),
            prompt_length=a.prompt_length,
            target=t,
            position=a.targets[t].position,
            methods=list(self.selected),
            relevance=[self._cache[m].targets[t].relevance for m in self.selected],
            k=TOP_K,
            curves=self.curves(t),
            strategy=FAITHFULNESS_STRATEGY,
            steps=FAITHFULNESS_STEPS,
            meta=run_meta("comparison"),
        )

    def export_target(self) -> Export | None:
        c = self.comparison()
        return Export(c, "comparison_report", "compare") if c is not None else None
