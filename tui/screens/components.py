"""Components: which layers, heads and neurons carried the selected answer token.

The answer shown in the Ask view is explained once more with component relevance
(``reexplain(..., components=True)``, the family's default method when the shown one has no
components), in a worker with progress that Esc cancels; once per answer. For the selected
answer token (←/→, shared with the other views) it shows the relevance trace (residual stream
per layer and position) as a grid (a hybrid's rows name each block's parts: attn, mix, mlp, moe),
and the top heads, MLP neurons, Mamba channels, Mamba-2 SSM heads and experts ranked by
|relevance|. Enter on one computes its conditional heatmap (the input relevance that flows
through it, :func:`lrp_llm.analyses.components.conditional_relevance`; an SSM head: its channels)
and recolours the input with it; ``a`` zero-ablates it, ``m`` mean-ablates it (:mod:`patching.interventions`;
a routed expert can only be zeroed, :mod:`patching.experts`) and shows the token's new logit and
probability next to the old ones. The snippets pane lists the chosen component's top corpus contexts
when the model's corpus index (in the cache, any corpus) holds its layer and kind: those where it is most
relevant for the next-token prediction, or (``s`` switches) where it is most active.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import WorkerState, get_current_worker

from lrp_llm.methods import label
from lrp_llm.text import compact, visible

from ..exporting import Export
from ..messages import JobProgress
from ..widgets.heatgrid import HeatGrid
from ..widgets.literal import literal
from ..widgets.tokenflow import AnswerTokens, TokenFlow
from .base import Command, ViewScreen

if TYPE_CHECKING:
    from lrp_llm.results.attribution import Attribution

    from ..backend import ModelBackend

GROUP = "components"
TOP = 8  # components listed per kind
KINDS = (
    ("head", "heads"),
    ("neuron", "neurons"),
    ("channel", "channels"),
    ("ssm-head", "SSM heads"),
    ("expert", "experts"),
)
NO_INDEX = "no corpus index for this model (build one with `xai-tui components index`)"
EMPTY = "No explanation yet: ask a question in the Ask & explain view (F2)."
SNIPPETS = 5  # corpus contexts shown per component
# the parts a block can have, with the short names the trace's row labels give them (hybrids: blocks differ)
PARTS = (("attn", "attn"), ("mixer", "mix"), ("mlp", "mlp"), ("experts", "moe"))


def block_parts(c: Any) -> list[list[str]]:
    """Per block of ``c`` (a ComponentRelevance) the parts it has: attn, mixer, mlp, experts (a MoE block's MLP)."""
    out = []
    for i in range(c.n_layers):
        moe = c.experts is not None and bool(np.isfinite(c.experts[i]).any())
        have = {"attn": c.attn[i] is not None, "mixer": c.mixer[i] is not None}
        have |= {"mlp": c.mlp[i] is not None and not moe, "experts": moe}
        out.append([p for p, _ in PARTS if have[p]])
    return out


def row_labels(c: Any) -> list[str]:
    """The trace grid's row names: ``emb``, then ``L{i}``, with each block's parts where the blocks differ."""
    parts = block_parts(c)
    short = dict(PARTS)
    if len({tuple(p) for p in parts}) <= 1:
        return ["emb", *(f"L{i}" for i in range(c.n_layers))]
    return ["emb", *(f"L{i} {'+'.join(short[p] for p in ps)}" for i, ps in enumerate(parts))]


def index_stores(model: Any) -> list[Path]:
    """The corpus-index stores of ``model`` in the cache (:func:`lrp_llm.analyses.corpus_index.default_db_path`,
    any corpus), newest first."""
    from lrp_llm.analyses.corpus_index import default_db_path, model_fingerprint

    if model is None:
        return []
    fingerprint = model_fingerprint(model)
    folder = default_db_path(fingerprint, "").parent
    found = folder.glob(f"{fingerprint[:16]}-*.sqlite") if folder.is_dir() else []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def snippets_text(stores: list[Path], site: str | None, by: str = "relevance") -> Text:
    """What the snippets pane shows for ``site``: its top corpus contexts by ``by`` ("relevance" or
    "activation"), from the first of the model's ``stores`` that indexes its layer and kind (the firing token
    marked); else how to build one."""
    from lrp_llm.analyses.corpus_index import indexed, top_contexts
    from lrp_llm.archs.sites import Site

    if not stores:
        return literal(NO_INDEX)
    if site is None:
        most = "relevant" if by == "relevance" else "active"
        return literal(f"choose a head, neuron or channel (Enter) to see the corpus contexts it is most {most} in")
    try:
        s = Site.parse(site)
    except Exception:  # an SSM head, an expert: not indexed
        s = None
    if s is not None:
        for db in stores:
            if any(e["layer"] == s.layer and e["kind"] == s.kind for e in indexed(db)):
                text = Text()
                for j, snip in enumerate(top_contexts(db, site, by, SNIPPETS)):
                    text.append(("\n" if j else "") + f"{snip.value:+.3f} ", style="green" if snip.value > 0 else "red")
                    text.append(visible("".join(snip.before)))
                    text.append(visible(snip.token), style="bold reverse")
                    text.append(visible("".join(snip.after)))
                return text if text.plain else literal(f"{site}: no contexts indexed yet")
    return literal(f"{site} is not in the model's corpus index (`xai-tui components index` builds its layer and kind)")


class ComponentsScreen(ViewScreen):
    VIEW_ID = "components"
    CSS_PATH: ClassVar = [Path(__file__).parent.parent / "components.tcss"]

    BINDINGS = [
        Binding("a", "ablate('zero')", "Ablate", id="components.ablate"),
        Binding("m", "ablate('mean')", "Mean-ablate", id="components.mean_ablate"),
        Binding("c", "compute", "Compute", id="components.compute", show=False),
        Binding("s", "snippets_by", "Snippets by", id="components.snippets_by"),
    ]

    @dataclass
    class Explained(Message):
        """The answer explained with component relevance (from the worker)."""

        job: int
        key: tuple[int, ...]
        attribution: Attribution

    @dataclass
    class Conditional(Message):
        job: int
        key: tuple[int, ...]
        target: int
        site: str
        relevance: np.ndarray

    @dataclass
    class Ablated(Message):
        job: int
        key: tuple[int, ...]
        target: int
        effect: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        self._answer: tuple[int, ...] = ()  # input ids of the answer the caches belong to
        self.explained: Attribution | None = None
        """The answer explained with components (None until computed)."""
        self._conditional: dict[tuple[int, str], np.ndarray] = {}  # (answer token, site) -> heatmap
        self._ablations: dict[tuple[int, str, str], dict[str, Any]] = {}  # (token, site, op) -> effect
        self.selected: str | None = None
        """The chosen component (site name) whose heatmap colours the input."""
        self.ranked: list[tuple[str, float]] = []
        """The listed components (site, relevance) of the selected token, in list order."""
        self._busy: int | None = None
        self._stores: tuple[int, list[Path]] | None = None  # (id of the model, its corpus-index stores)
        self.snippets_by = "relevance"
        """What ranks the corpus snippets: "relevance" (default) or "activation" (``s`` switches)."""

    def compose_body(self) -> ComposeResult:
        yield AnswerTokens(id="cpt-answer", placeholder=EMPTY)
        with Horizontal(id="cpt-body"):
            with Vertical(id="cpt-main"):
                yield HeatGrid(id="cpt-trace", label_width=9)
                yield TokenFlow(id="cpt-prompt", placeholder="…")
            with Vertical(id="cpt-side"):
                yield OptionList(id="cpt-list")
                yield Static("", id="cpt-effect")
                yield Static(literal(NO_INDEX), id="cpt-snippets")

    def on_mount(self) -> None:
        self.query_one("#cpt-trace").border_title = "Relevance trace · layer × position"
        self.query_one("#cpt-list").border_title = "Top components · Enter: heatmap"
        self.query_one("#cpt-effect").border_title = "Ablation · a zero, m mean"
        self._title_snippets()
        self.watch(self.xai, "attribution", self._attribution_changed)
        self.watch(self.xai, "target", self._show_target, init=False)

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self._attribution_changed()

    # ------------------------------------------------------------ state
    def _answer_of(self) -> Attribution | None:
        """The app's explanation when it is a finished causal-LM one (not partial), else None."""
        a = self.xai.attribution
        if a is None or not a.targets or a.meta.get("partial") or a.source_tokens is not None:
            return None
        return a

    def _target(self, a: Attribution) -> int:
        return max(0, min(self.xai.target, len(a.targets) - 1))

    def _attribution_changed(self, _: Any = None) -> None:
        a = self._answer_of()
        if a is not None and tuple(a.input_ids) != self._answer:
            self._answer, self.explained = tuple(a.input_ids), None
            self._conditional, self._ablations, self.selected = {}, {}, None
        if a is not None and self.explained is None and all(t.components is not None for t in a.targets):
            self.explained = a  # explained with components already (e.g. a saved result)
        self._show_answer()
        if self.is_current:
            self.action_compute()

    def busy(self) -> bool:
        """Whether a job of this view is running (not cancelled, not failed)."""
        app = self.xai
        alive = (WorkerState.PENDING, WorkerState.RUNNING)
        return (
            self._busy is not None
            and app._live(self._busy, GROUP)
            and any(w.group == GROUP and w.state in alive for w in app.workers)
        )

    def _start(self, what: str, work: Any) -> int | None:
        """Run ``work(job, backend)`` in a worker of this view (one at a time: they share the model)."""
        app = self.xai
        if app.backend is None or not app.backend.loaded:
            app.show_error(f"{what} needs the model; press Ctrl+O to load it")
            return None
        if self.busy():
            app.show_error("the Components view is computing; wait for it (or press Esc to stop it)")
            return None
        job = self._busy = app._new_job(GROUP)
        app.progress = (what, 0, None)
        app.status = (f"{what} … (Esc cancels)", "busy")
        backend = app.backend
        app.run_worker(lambda: work(job, backend), thread=True, group=GROUP, exit_on_error=False)
        app.refresh_bindings()
        return job

    # ------------------------------------------------------------ computing
    def action_compute(self) -> None:
        """Explain the shown answer with component relevance (in a worker), unless done."""
        a = self._answer_of()
        if a is None or self.explained is not None or self.busy():
            return
        if self.xai.backend is None or not self.xai.backend.loaded:
            self.query_one("#cpt-prompt", TokenFlow).placeholder = "Component relevance needs the model; Ctrl+O."
            return
        key = tuple(a.input_ids)

        def work(job: int, backend: ModelBackend) -> None:
            worker = get_current_worker()
            method = backend.component_method(a.method)
            result = backend.reexplain(
                a,
                method,
                components=True,
                progress=lambda done, total: self.post_message(JobProgress(job, "components", done, total)),
                should_cancel=lambda: worker.is_cancelled,
            )
            self.post_message(self.Explained(job, key, result))

        self._start("explaining with components", work)

    @on(JobProgress)
    def _job_progress(self, message: JobProgress) -> None:
        message.stop()  # handled here, in order with the results (as in the Compare view)
        self.xai.on_job_progress(message)

    def _done(self, job: int, status: str) -> bool:
        """A job's result arrived: whether it is still wanted (then the status says ``status``)."""
        app = self.xai
        if not app._live(job, GROUP):
            return False
        self._busy = None
        app.progress = None
        app.status = (status, "info")
        app.refresh_bindings()
        return True

    @on(Explained)
    def _explained(self, message: Explained) -> None:
        if not self._done(message.job, "components explained; ↑/↓ choose one, Enter shows its heatmap, a ablates"):
            return
        if message.key == self._answer:
            self.explained = message.attribution
            self._show_answer()

    def action_choose(self, site: str) -> None:
        """Show the conditional heatmap of ``site`` for the selected token (computed in a worker once)."""
        a = self.explained
        if a is None:
            return
        t = self._target(a)
        self.selected = site
        if (t, site) in self._conditional:
            self._show_target()
            return
        key = self._answer

        def work(job: int, backend: ModelBackend) -> None:
            result = backend.conditional(a, t, site)
            self.post_message(self.Conditional(job, key, t, site, result.heatmaps[0].relevance))

        self._start(f"conditional heatmap of {site}", work)

    @on(Conditional)
    def _conditional_ready(self, message: Conditional) -> None:
        if self._done(message.job, f"input coloured by the relevance through {message.site}") and (
            message.key == self._answer
        ):
            self._conditional[(message.target, message.site)] = message.relevance
            self._show_target()

    def action_ablate(self, op: str) -> None:
        """Predict the selected token again with the highlighted component ablated (``op``: zero or mean)."""
        a = self.explained
        site = self._highlighted()
        if a is None or site is None:
            self.xai.show_error("no component chosen; wait for the components, then highlight one in the list")
            return
        t = self._target(a)
        if op != "zero" and ".mlp.expert." in site:
            self.xai.show_error(f"{site}: a routed expert can only be zeroed (its routing weight); press a")
            return
        if (t, site, op) in self._ablations:
            self.selected = site
            self._show_target()
            return
        key = self._answer

        def work(job: int, backend: ModelBackend) -> None:
            self.post_message(self.Ablated(job, key, t, backend.ablate(a, t, site, op)))

        self._start(f"ablating {site}", work)

    @on(Ablated)
    def _ablated(self, message: Ablated) -> None:
        e = message.effect
        if (
            self._done(
                message.job, f"{e['site']} ablated ({e['op']}): p {e['probability']:.3f} → {e['new_probability']:.3f}"
            )
            and message.key == self._answer
        ):
            self._ablations[(message.target, e["site"], e["op"])] = e
            self.selected = e["site"]
            self._show_target()

    # ------------------------------------------------------------ showing
    def _show_answer(self) -> None:
        answer = self.query_one("#cpt-answer", AnswerTokens)
        a = self._answer_of()
        if a is None:
            answer.set_answer([], None)
            answer.border_title = "Answer"
            self.query_one("#cpt-trace", HeatGrid).set_matrix(np.zeros((0, 0)), [], [])
            self.query_one("#cpt-list", OptionList).clear_options()
            self.query_one("#cpt-prompt", TokenFlow).clear()
            self.ranked = []
            return
        answer.set_answer(a.tokens[a.prompt_length :], self._target(a), len(a.targets))
        self._show_target()

    def _show_target(self, _: Any = None) -> None:
        a = self._answer_of()
        if a is None:
            return
        t = self._target(a)
        answer = self.query_one("#cpt-answer", AnswerTokens)
        if answer.cursor != t:
            answer.set_answer(answer.tokens, t, len(a.targets))
        answer.border_title = f"Answer · token {t + 1}/{len(a.targets)} · ←/→ or mouse"
        prompt = self.query_one("#cpt-prompt", TokenFlow)
        grid = self.query_one("#cpt-trace", HeatGrid)
        options = self.query_one("#cpt-list", OptionList)
        if self.explained is None:
            answer.border_subtitle = literal(compact(a.targets[t].token))
            grid.set_matrix(np.zeros((0, 0)), [], [])
            options.clear_options()
            self.ranked = []
            prompt.set_tokens([])
            prompt.placeholder = "computing the components … (Esc cancels; c computes again)"
            return
        tr = self.explained.targets[t]
        c = tr.components
        answer.border_subtitle = literal(
            f"{compact(tr.token)}  logit {tr.logit:.2f}  p {tr.probability:.3f}  {label(self.explained.method)}"
        )
        from lrp_llm.export.components_section import layer_labels

        rows = row_labels(c)
        cursor = grid.cursor if grid.cursor is not None and grid.values.shape == c.trace.shape else None
        grid.set_matrix(c.trace, rows, [str(x) for x in a.tokens[: tr.position]], cursor=cursor or (c.n_layers, 0))
        grid.border_subtitle = f"max |R| {grid.scale:.3g}"
        self._layer_labels = layer_labels(c.n_layers)
        ranked = [(s, v) for kind, _ in KINDS for s, v in c.top_components(kind, TOP)]
        if ranked != self.ranked:
            highlighted = options.highlighted
            self.ranked = ranked
            options.clear_options()
            options.add_options([Option(self._row(s, v), id=s) for s, v in ranked])
            if ranked:
                options.highlighted = min(highlighted or 0, len(ranked) - 1)
        heat = self._conditional.get((t, self.selected)) if self.selected else None
        values = tr.relevance if heat is None else heat
        prompt.set_tokens(a.tokens, values, target=tr.position, dim_from=tr.position + 1)
        self.call_after_refresh(prompt.scroll_to_token, tr.position)
        prompt.border_title = literal(
            f"Input relevance through {self.selected}" if heat is not None else "Input relevance (all components)"
        )
        prompt.border_subtitle = f"max |R| {prompt.scale:.3g}"
        self._show_effect(t)
        self._show_snippets()

    def action_snippets_by(self) -> None:
        """Rank the corpus snippets by the other score (relevance <-> activation)."""
        self.snippets_by = "activation" if self.snippets_by == "relevance" else "relevance"
        self._title_snippets()
        self._show_snippets()

    def _title_snippets(self) -> None:
        other = "activation" if self.snippets_by == "relevance" else "relevance"
        pane = self.query_one("#cpt-snippets")
        pane.border_title = f"Corpus snippets · by {self.snippets_by}"
        pane.border_subtitle = f"s: by {other}"

    def _show_snippets(self) -> None:
        pane = self.query_one("#cpt-snippets", Static)
        pane.update(snippets_text(self._index_stores(), self.selected, self.snippets_by))

    def _index_stores(self) -> list[Path]:
        """The corpus-index stores of the loaded model (looked up once per model)."""
        model = getattr(self.xai.backend, "model", None)
        if self._stores is None or self._stores[0] != id(model):
            self._stores = (id(model), index_stores(model))
        return self._stores[1]

    @staticmethod
    def _row(site: str, value: float) -> Text:
        row = Text()
        row.append(f"{value:+.3f} ", style="green" if value > 0 else "red")
        row.append(site)
        return row

    def _show_effect(self, t: int) -> None:
        effect = self.query_one("#cpt-effect", Static)
        found = [e for (k, site, _), e in self._ablations.items() if k == t and site == self.selected]
        if not found:
            effect.update(literal("highlight a component, a: zero it, m: mean-ablate it"))
            return
        lines = Text()
        for j, e in enumerate(found):
            lines.append(("\n" if j else "") + f"{e['op']:<4} ", style="bold")
            lines.append(f"logit {e['logit']:+.2f} → {e['new_logit']:+.2f}\n")
            lines.append(f"     p {e['probability']:.3f} → {e['new_probability']:.3f}\n")
            lines.append(f"     top {visible(compact(e['new_top']))} ({e['new_top_probability']:.3f})")
        effect.update(lines)

    def _highlighted(self) -> str | None:
        options = self.query_one("#cpt-list", OptionList)
        i = options.highlighted
        return self.ranked[i][0] if i is not None and i < len(self.ranked) else None

    @on(OptionList.OptionSelected, "#cpt-list")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.action_choose(event.option.id)

    @on(HeatGrid.CellSelected, "#cpt-trace")
    def _cell(self, event: HeatGrid.CellSelected) -> None:
        a = self.explained
        if a is None:
            return
        tr = a.targets[self._target(a)]
        r, col = event.row, event.column
        if r < tr.components.trace.shape[0] and col < tr.position:
            value = float(tr.components.trace[r, col])
            name = getattr(self, "_layer_labels", [""] * (r + 1))[r]
            c = tr.components
            parts = (
                ""
                if r == 0
                else " (" + ", ".join(f"{p} {self._part_value(c, r - 1, p):+.3f}" for p in block_parts(c)[r - 1]) + ")"
            )
            self.query_one("#cpt-trace").border_subtitle = literal(
                f"{name}{parts} · {compact(a.tokens[col])} (position {col}): {value:+.4f}"
            )

    @staticmethod
    def _part_value(c: Any, layer: int, part: str) -> float:
        return float(c.moe_total(layer) if part == "experts" else getattr(c, part)[layer])

    @on(AnswerTokens.CursorMoved, "#cpt-answer")
    def _cursor_moved(self, event: AnswerTokens.CursorMoved) -> None:
        self.xai.target = event.index

    # ------------------------------------------------------------ palette, export
    def commands(self) -> Iterable[Command]:
        site = self._highlighted()
        if site is not None:
            yield (
                "Conditional heatmap",
                f"Colour the input by the relevance through {site} (Enter)",
                lambda: self.action_choose(site),
            )
            yield ("Ablate (zero)", f"Zero {site} and predict the token again (a)", lambda: self.action_ablate("zero"))
            yield ("Ablate (mean)", f"Mean-ablate {site} and predict again (m)", lambda: self.action_ablate("mean"))
        if self.explained is None and self._answer_of() is not None:
            yield ("Compute the components", "Explain the answer with component relevance (c)", self.action_compute)

    def view(self):
        """What the view shows as a :class:`~lrp_llm.export.components_section.ComponentsView` (None: nothing yet)."""
        from lrp_llm.export.components_section import ComponentsView

        a = self.explained
        if a is None:
            return None
        t = self._target(a)
        heat = self._conditional.get((t, self.selected)) if self.selected else None
        ablation = next((e for (k, site, _), e in self._ablations.items() if k == t and site == self.selected), None)
        return ComponentsView(a, t, self.selected if heat is not None or ablation else None, heat, ablation)

    def export_target(self) -> Export | None:
        v = self.view()
        if v is None:
            return None
        # JSON: the explanation with its components (reopenable); HTML: the view's section
        return Export(v.attribution, "components_report", "components", lambda _result, v=v: v)
