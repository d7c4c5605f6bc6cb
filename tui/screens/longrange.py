"""Long range: how far back the selected answer token's relevance reaches.

A histogram of relevance by token distance (log2 bins), the share of |relevance| that
lies more than ``far`` tokens back, and the far tokens ranked by |relevance|; selecting
one scrolls the input to it. Nothing here is model-specific: transformers and Mamba
models give the same kind of relevance vector.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Static
from textual.widgets.option_list import Option

from lrp_llm.text import compact

from ..exporting import Export, attribution_export
from ..widgets.histogram import DistanceHistogram
from ..widgets.legend import Legend
from ..widgets.literal import literal
from ..widgets.sources import Source, SourcesList
from ..widgets.tokenflow import AnswerTokens, TokenFlow
from .base import Command, ViewScreen

FAR_CHOICES = (4, 8, 16, 32, 64, 100, 128, 256, 512, 1000, 2048, 4096)


class LongRangeScreen(ViewScreen):
    VIEW_ID = "longrange"

    BINDINGS = [
        Binding("plus,equals_sign", "far(1)", "Farther", id="longrange.farther"),
        Binding("minus", "far(-1)", "Nearer", id="longrange.nearer"),
        Binding("j", "jump(1)", "Next far token", id="longrange.jump"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.far = 32  # tokens more than this far back count as far context
        self.profile = None
        self._far_tokens: list[int] = []
        self._jump = -1

    def compose_body(self) -> ComposeResult:
        yield AnswerTokens(
            id="lr-answer", placeholder="No explanation yet: ask a question in the Ask & explain view (F2)."
        )
        with Horizontal(id="lr-body"):
            with Vertical(id="lr-left"):
                yield Static("", id="far-share")
                yield DistanceHistogram(id="histogram")
            yield SourcesList(id="far-tokens")
        yield TokenFlow(id="lr-prompt", placeholder="The input appears here.")
        yield Legend(id="lr-legend")

    def on_mount(self) -> None:
        self.query_one("#lr-left").border_title = "Relevance by distance (log2 bins)"
        self.query_one("#lr-prompt").border_title = "Input"
        self.watch(self.xai, "attribution", self._show_result)
        self.watch(self.xai, "target", self._show_target, init=False)

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self._show_result(self.xai.attribution)

    def _show_result(self, attribution) -> None:
        answer = self.query_one("#lr-answer", AnswerTokens)
        if attribution is None or not attribution.targets:
            answer.set_answer([], None)
            return
        t = min(self.xai.target, len(attribution.targets) - 1)
        answer.set_answer(attribution.tokens[attribution.prompt_length :], t, len(attribution.targets))
        self._show_target()

    def _show_target(self) -> None:
        from lrp_llm.analyses.longrange import far_tokens, relevance_by_distance, share_beyond

        a = self.xai.attribution
        if a is None or not a.targets:
            return
        t = min(self.xai.target, len(a.targets) - 1)
        tr = a.targets[t]
        answer = self.query_one("#lr-answer", AnswerTokens)
        if answer.cursor != t:
            answer.set_answer(answer.tokens, t, len(a.targets))
        answer.border_title = f"Answer · token {t + 1}/{len(a.targets)} · ←/→ or mouse"
        profile = relevance_by_distance(tr.relevance)
        self.profile = profile
        self.query_one(DistanceHistogram).show(profile, self.far)
        share = share_beyond(tr.relevance, self.far)
        self.query_one("#far-share", Static).update(
            f"[b]{100 * share:.1f}%[/] of |relevance| lies more than {self.far} tokens back"
            f" [dim]({tr.position} tokens before it; +/- change)[/]"
        )
        far = far_tokens(tr.relevance, a.tokens, min_distance=self.far, k=30)
        sources = self.query_one("#far-tokens", SourcesList)
        sources.show([Source(f.index, a.tokens[f.index], f.relevance, f.distance) for f in far])
        if not far:
            sources.add_option(
                Option(
                    f"no token is more than {self.far} back ({tr.position} tokens before this one); press -",
                    disabled=True,
                )
            )
        sources.border_title = f"Far tokens (more than {self.far} back)"
        self._far_tokens = [f.index for f in far]
        self._jump = -1
        prompt = self.query_one("#lr-prompt", TokenFlow)
        prompt.set_tokens(a.tokens, tr.relevance, target=tr.position, dim_from=tr.position + 1)
        prompt.border_title = literal(f"Input relevance for {compact(tr.token)} · tokens")
        prompt.scroll_to_token(tr.position)
        self.query_one(Legend).scale = prompt.scale

    @on(AnswerTokens.CursorMoved, "#lr-answer")
    def _cursor_moved(self, event: AnswerTokens.CursorMoved) -> None:
        self.xai.target = event.index

    @on(SourcesList.Jump, "#far-tokens")
    def _jump_to(self, event: SourcesList.Jump) -> None:
        self.show_token(event.index)

    def show_token(self, index: int) -> None:
        prompt = self.query_one("#lr-prompt", TokenFlow)
        prompt.highlight = index
        prompt.scroll_to_token(index)

    def action_far(self, step: int) -> None:
        i = FAR_CHOICES.index(self.far) if self.far in FAR_CHOICES else 3
        self.far = FAR_CHOICES[max(0, min(len(FAR_CHOICES) - 1, i + step))]
        self._show_target()

    def action_jump(self, step: int) -> None:
        if not self._far_tokens:
            return
        self._jump = (self._jump + step) % len(self._far_tokens)
        index = self._far_tokens[self._jump]
        self.show_token(index)
        sources = self.query_one("#far-tokens", SourcesList)
        sources.highlighted = sources.get_option_index(str(index))

    def commands(self) -> Iterable[Command]:
        yield (
            "Far threshold: farther",
            "Raise the distance that counts as far context (+)",
            lambda: self.action_far(1),
        )
        yield (
            "Far threshold: nearer",
            "Lower the distance that counts as far context (-)",
            lambda: self.action_far(-1),
        )
        if self._far_tokens:
            yield (
                "Jump to far token",
                "Scroll the input to the most relevant far token (j)",
                lambda: self.action_jump(1),
            )

    def export_target(self) -> Export | None:
        a = self.xai.attribution
        return attribution_export(a) if a is not None else None
