"""Ask & explain, the main view.

Context and question in, the answer streams in token by token, then every answer token
is explained. The cursor on the answer (←/→, mouse) picks the explained token: the
input is recoloured with its relevance, its logit, probability and conservation ratio
show in the answer panel's subtitle, and its most relevant inputs are ranked on the
right (Enter or a click scrolls the input to one; ``j`` walks through them).
"""

from __future__ import annotations

from collections.abc import Iterable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Select

from lrp_llm.export.levels import display_scale
from lrp_llm.methods import METHODS, label
from lrp_llm.text import compact

from ..backend import AskRequest
from ..rows import RelevanceRow, relevance_row
from ..widgets.legend import Legend
from ..widgets.literal import literal
from ..widgets.sources import SourcesList, apart_sources, ranked_sources
from ..widgets.text_input import TextInput
from ..widgets.tokenflow import AnswerTokens, TokenFlow
from .base import AnswerViewScreen, Command

PLACEHOLDER = "Type a question above and press Enter. F1 lists every key; Ctrl+P opens the command palette."


class AskScreen(AnswerViewScreen):
    VIEW_ID = "ask"

    BINDINGS = [
        Binding("ctrl+t", "next_method", "Method", id="ask.method"),
        Binding("ctrl+g", "toggle_words", "Words", id="ask.words"),
        Binding("ctrl+n", "toggle_chat", "QA/plain", id="ask.chat"),
        Binding("ctrl+e", "toggle_scale", "Scale", id="ask.scale", show=False),
        Binding("j", "jump(1)", "Next source", id="ask.jump"),
        Binding("k", "jump(-1)", "Previous source", id="ask.jump_back", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.row: RelevanceRow | None = None

    def compose_body(self) -> ComposeResult:
        with Vertical(id="ask-box"):
            yield TextInput(
                placeholder="Context (optional): a passage the question is about", id="context", compact=True
            )
            with Horizontal(id="question-row"):
                yield TextInput(placeholder="Question (Enter asks)", id="question", compact=True)
                yield Select(
                    [(label(m), m) for m in METHODS],
                    value=self.xai.method,
                    allow_blank=False,
                    compact=True,
                    id="method",
                )
                yield Button("Ask", id="ask", variant="primary", compact=True)
        yield AnswerTokens(id="answer", placeholder="The answer appears here, token by token.")
        with Horizontal(id="body"):
            yield TokenFlow(id="prompt", placeholder=PLACEHOLDER)
            yield SourcesList(id="sources")
        yield Legend(id="legend")

    def on_mount(self) -> None:
        app = self.xai
        self.query_one("#ask-box").border_title = "Ask"
        self.query_one("#sources").border_title = "Top sources"
        self.query_one("#prompt").border_title = "Input"
        if app.initial_question:
            self.query_one("#question", Input).value = app.initial_question
        if app.initial_context:
            self.query_one("#context", Input).value = app.initial_context
        self.watch(app, "attribution", self._show_result)
        self.watch(app, "target", self._show_target, init=False)
        self.watch(app, "word_level", self._show_target, init=False)
        self.watch(app, "scale_all", self._show_target, init=False)
        self.watch(app, "stream_prompt", self._show_stream_prompt, init=False)
        self.watch(app, "stream_answer", self._show_stream_answer, init=False)
        self.watch(app, "method", self._sync_method)
        self.watch(app, "chat", self._sync_chat)
        self.watch(app, "model_state", self._sync_inputs)
        self.query_one("#question", Input).focus()

    # ---------------------------------------------------------------- inputs
    def _sync_inputs(self, state: str) -> None:
        no_model = self.xai.backend is None
        for widget in self.query("#ask-box Input, #ask-box Button"):
            widget.disabled = no_model
        self.query_one("#method", Select).disabled = no_model
        box = self.query_one("#ask-box")
        box.border_subtitle = "saved result: Ctrl+O loads a model to ask" if no_model else ""

    def _sync_method(self, method: str) -> None:
        select = self.query_one("#method", Select)
        if select.value != method:
            with select.prevent(Select.Changed):
                select.value = method

    def _sync_chat(self, chat: bool) -> None:
        self.query_one("#context", Input).display = chat
        question = self.query_one("#question", Input)
        question.placeholder = "Question (Enter asks)" if chat else "Prompt to continue (Enter runs; plain mode)"
        self.query_one("#ask-box").border_title = "Ask (QA)" if chat else "Prompt (plain, no chat template)"

    @on(Input.Submitted, "#question, #context")
    @on(Button.Pressed, "#ask")
    def _ask(self) -> None:
        app = self.xai
        question = self.query_one("#question", Input).value
        context = self.query_one("#context", Input).value.strip() if app.chat else ""
        app.ask(AskRequest(question, context or None, app.chat, app.method, app.max_new_tokens))

    @on(Select.Changed, "#method")
    def _method_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.xai.set_method(event.value)

    # -------------------------------------------------------------- results
    def _show_stream_prompt(self) -> None:
        app = self.xai
        if app.stream_prompt is None:  # the run ended (done, failed or cancelled)
            self._show_result(app.attribution)
            return
        self.query_one("#prompt", TokenFlow).set_tokens(app.stream_prompt)
        self.query_one("#sources", SourcesList).clear_options()
        self.query_one(Legend).scale = 0.0
        self._ranked = []
        self._show_stream_answer()

    def _show_stream_answer(self) -> None:
        app = self.xai
        if app.stream_prompt is None:
            return
        answer = self.query_one("#answer", AnswerTokens)
        answer.set_answer(app.stream_answer, None)
        answer.border_title = f"Answer · generating ({len(app.stream_answer)} tokens)"
        answer.border_subtitle = ""

    def _show_result(self, attribution) -> None:
        answer = self.query_one("#answer", AnswerTokens)
        if attribution is None or not attribution.targets:
            answer.set_answer([], None)
            answer.border_title = "Answer"
            self.query_one("#prompt", TokenFlow).clear()
            return
        t = min(self.xai.target, len(attribution.targets) - 1)
        answer.set_answer(attribution.tokens[attribution.prompt_length :], t, len(attribution.targets))
        self._show_target()
        if self.app.focused is None or isinstance(self.app.focused, Input):
            answer.focus()

    def _show_target(self) -> None:
        a = self.xai.attribution
        if a is None or not a.targets or self.xai.stream_prompt is not None:
            return
        t = min(self.xai.target, len(a.targets) - 1)
        row = relevance_row(a, t, self.xai.word_level)
        self.row = row
        tr = row.explained
        prompt = self.query_one("#prompt", TokenFlow)
        apart = row.apart(a.meta.get("template_positions"))
        scale = display_scale(row.values, () if self.xai.scale_all else apart)
        prompt.set_tokens(row.texts, row.values, target=row.target, dim_from=row.target + 1, scale=scale)
        prompt.scroll_to_token(row.target)
        unit = "words" if self.xai.word_level else "tokens"
        prompt.border_title = literal(f"Input relevance for {compact(tr.token)} · {unit}")
        answer = self.query_one("#answer", AnswerTokens)
        if answer.cursor != t:
            answer.set_answer(answer.tokens, t, len(a.targets))
        n_answer = len(a.tokens) - a.prompt_length
        if len(a.targets) < n_answer:  # the rest are being explained (or the run was stopped)
            answer.border_title = f"Answer · token {t + 1}/{n_answer} · {len(a.targets)} explained · ←/→ or mouse"
        else:
            answer.border_title = f"Answer · token {t + 1}/{len(a.targets)} · ←/→ or mouse"
        answer.border_subtitle = literal(
            f"{compact(tr.token)}  logit {tr.logit:.2f}  p {tr.probability:.3f}  ΣR/logit {tr.conservation:.2f}"
        )
        distances = [row.distance(k) for k in range(row.target)]
        top, bottom = ranked_sources(row.texts[: row.target], row.values, distances=distances, apart=apart)
        total = sum(v for v in row.values if v > 0)
        sources = self.query_one("#sources", SourcesList)
        sources.show(top, bottom, total=total, apart=apart_sources(row.texts, row.values, apart))
        sources.border_title = literal(f"Top sources of {compact(tr.token)}")
        self._ranked = [s.index for s in top]
        self._jump = -1
        legend = self.query_one(Legend)
        legend.unit = (
            "max |relevance| of the selected token, special / template tokens left out (Ctrl+E)"
            if apart and not self.xai.scale_all
            else "max |relevance| of the selected token"
        )
        legend.scale = prompt.scale

    def show_source(self, unit: int) -> None:
        """Scroll the input to display unit ``unit`` and mark it."""
        prompt = self.query_one("#prompt", TokenFlow)
        prompt.highlight = unit
        prompt.scroll_to_token(unit)

    # -------------------------------------------------------------- actions
    def action_toggle_words(self) -> None:
        self.xai.word_level = not self.xai.word_level

    def action_toggle_scale(self) -> None:
        """Colour scale over every token, or (the default) without special and chat-template tokens."""
        self.xai.scale_all = not self.xai.scale_all

    def action_toggle_chat(self) -> None:
        self.xai.chat = not self.xai.chat

    def action_focus_answer(self) -> None:
        self.query_one("#answer", AnswerTokens).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "toggle_chat":
            return self.xai.backend is not None
        return super().check_action(action, parameters)

    def commands(self) -> Iterable[Command]:
        app = self.xai
        words = "off (per token)" if app.word_level else "on (merge sub-word tokens)"
        yield ("Word level: " + words, "Show relevance per word or per token (Ctrl+G)", self.action_toggle_words)
        scale = "without special / template tokens" if app.scale_all else "over every token"
        yield (
            "Colour scale: " + scale,
            "Include special and chat-template tokens in the colour scale, or leave them out (Ctrl+E)",
            self.action_toggle_scale,
        )
        if app.backend is not None:
            mode = "plain prompt" if app.chat else "QA (chat template)"
            yield (
                f"Input mode: {mode}",
                "Switch between QA with context and a plain prompt (Ctrl+N)",
                self.action_toggle_chat,
            )
        yield from self.method_commands()
        if self._ranked:
            yield ("Jump to top source", "Scroll the input to the most relevant token (j)", lambda: self.action_jump(1))
