"""Source & answer, the view of encoder-decoder models (T5).

The source text in (a plain prompt such as ``copy: a b c d``: encoder-decoders take no chat
template), the answer streams in token by token, then every answer token is explained. For
the selected answer token (←/→, mouse) both sides the model read are coloured on one
scale: the source (the encoder's input) and the decoder prefix (the answer so far), each
titled with its share of the relevance (Σ|R| of the side over Σ|R| of both, as
:meth:`~lrp_llm.results.attribution.TargetRelevance.side_shares` computes it); the most
relevant tokens of both sides are ranked on the right.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Select

from lrp_llm.methods import METHODS, label
from lrp_llm.text import compact

from ..backend import AskRequest
from ..widgets.legend import Legend
from ..widgets.literal import literal
from ..widgets.sources import SourcesList, ranked_sources
from ..widgets.text_input import TextInput
from ..widgets.tokenflow import AnswerTokens, TokenFlow
from .base import AnswerViewScreen, Command

PLACEHOLDER = "Type the source text above (e.g. a task prompt) and press Enter. F1 lists every key."


def spaced(tokens) -> int:
    """The gap (in cells) to draw between ``tokens``: 1 when none carries whitespace (a word-level
    vocabulary, such as the synthetic copy/reverse task's), where drawn together they would run
    into one word; 0 for sub-word vocabularies, whose tokens carry their own spaces."""
    return 0 if any(ch.isspace() for t in tokens for ch in t) else 1


def side_label(side: str, token: str) -> str:
    """A ranked token with the side it is on, so sources from both sides read apart."""
    return f"{side} {compact(token)}"


class Seq2SeqScreen(AnswerViewScreen):
    VIEW_ID = "seq2seq"
    CSS_PATH = Path(__file__).parent.parent / "seq2seq.tcss"

    BINDINGS = [
        Binding("ctrl+t", "next_method", "Method", id="seq2seq.method"),
        Binding("j", "jump(1)", "Next source", id="seq2seq.jump"),
        Binding("k", "jump(-1)", "Previous source", id="seq2seq.jump_back", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.shares: tuple[float, float] | None = None  # (source, decoder) of the token shown
        self._n_source = 0  # ranked units: source tokens first (0..n_src-1), then decoder tokens (n_src + k)

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="s2s-box"):
            yield TextInput(placeholder="Source text (Enter runs; no chat template)", id="s2s-source", compact=True)
            yield Select(
                [(label(m), m) for m in METHODS],
                value=self.xai.method,
                allow_blank=False,
                compact=True,
                id="s2s-method",
            )
            yield Button("Run", id="s2s-run", variant="primary", compact=True)
        yield AnswerTokens(id="answer", placeholder="The answer appears here, token by token.")
        with Horizontal(id="s2s-body"):
            with Vertical(id="s2s-sides"):
                yield TokenFlow(id="s2s-source-flow", placeholder=PLACEHOLDER)
                yield TokenFlow(id="s2s-decoder-flow")
            yield SourcesList(id="sources")
        yield Legend(id="legend")

    def on_mount(self) -> None:
        app = self.xai
        self.query_one("#s2s-box").border_title = "Source (encoder input, plain prompt)"
        self.query_one("#sources").border_title = "Top sources (both sides)"
        self.query_one("#s2s-source-flow").border_title = "Source"
        self.query_one("#s2s-decoder-flow").border_title = "Decoder prefix"
        self.query_one(Legend).unit = "max |relevance| over both sides"
        if app.initial_question:
            self.query_one("#s2s-source", Input).value = app.initial_question
        self.watch(app, "attribution", self._show_result)
        self.watch(app, "target", self._show_target, init=False)
        self.watch(app, "stream_prompt", self._show_stream_prompt, init=False)
        self.watch(app, "stream_answer", self._show_stream_answer, init=False)
        self.watch(app, "method", self._sync_method)
        self.watch(app, "model_state", self._sync_inputs)
        self.query_one("#s2s-source", Input).focus()

    # ---------------------------------------------------------------- inputs
    def _sync_inputs(self, state: str) -> None:
        no_model = self.xai.backend is None
        for widget in self.query("#s2s-box Input, #s2s-box Button, #s2s-box Select"):
            widget.disabled = no_model
        box = self.query_one("#s2s-box")
        box.border_subtitle = "saved result: Ctrl+O loads a model to run" if no_model else ""

    def _sync_method(self, method: str) -> None:
        select = self.query_one("#s2s-method", Select)
        if select.value != method:
            with select.prevent(Select.Changed):
                select.value = method

    @on(Input.Submitted, "#s2s-source")
    @on(Button.Pressed, "#s2s-run")
    def _run(self) -> None:
        app = self.xai
        source = self.query_one("#s2s-source", Input).value
        # chat=False: encoder-decoders read the text as it is (explain refuses a chat template for them)
        app.ask(AskRequest(source, None, False, app.method, app.max_new_tokens))

    @on(Select.Changed, "#s2s-method")
    def _method_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.xai.set_method(event.value)

    # -------------------------------------------------------------- results
    def _show_stream_prompt(self) -> None:
        app = self.xai
        if app.stream_prompt is None:  # the run ended (done, failed or cancelled)
            self._show_result(app.attribution)
            return
        source = self.query_one("#s2s-source-flow", TokenFlow)
        source.gap = spaced(app.stream_prompt)
        source.set_tokens(app.stream_prompt)
        source.border_title = "Source"
        decoder = self.query_one("#s2s-decoder-flow", TokenFlow)
        decoder.clear()
        decoder.border_title = "Decoder prefix"
        self.query_one("#sources", SourcesList).clear_options()
        self.query_one(Legend).scale = 0.0
        self._ranked, self.shares = [], None
        self._show_stream_answer()

    def _show_stream_answer(self) -> None:
        app = self.xai
        if app.stream_prompt is None:
            return
        answer = self.query_one("#answer", AnswerTokens)
        answer.gap = spaced((*app.stream_prompt, *app.stream_answer))
        answer.set_answer(app.stream_answer, None)
        answer.border_title = f"Answer · generating ({len(app.stream_answer)} tokens)"
        answer.border_subtitle = ""

    def _show_result(self, attribution) -> None:
        answer = self.query_one("#answer", AnswerTokens)
        if attribution is None or not attribution.targets or attribution.source_tokens is None:
            answer.set_answer([], None)
            answer.border_title = "Answer"
            self.query_one("#s2s-source-flow", TokenFlow).clear()
            self.query_one("#s2s-decoder-flow", TokenFlow).clear()
            return
        t = min(self.xai.target, len(attribution.targets) - 1)
        answer.gap = spaced((*attribution.source_tokens, *attribution.tokens))
        answer.set_answer(attribution.tokens[attribution.prompt_length :], t, len(attribution.targets))
        self._show_target()
        if self.app.focused is None or isinstance(self.app.focused, Input):
            answer.focus()

    def _show_target(self) -> None:
        a = self.xai.attribution
        if a is None or not a.targets or a.source_tokens is None or self.xai.stream_prompt is not None:
            return
        t = min(self.xai.target, len(a.targets) - 1)
        tr = a.targets[t]
        src_values = [float(v) for v in tr.source_relevance]
        dec_values = [float(v) for v in tr.relevance]
        # one scale for both sides, so a colour means the same relevance in the source and the prefix
        scale = max((abs(v) for v in (*src_values, *dec_values)), default=0.0)
        self.shares = tr.side_shares()
        source_share, decoder_share = self.shares
        gap = spaced((*a.source_tokens, *a.tokens))
        source = self.query_one("#s2s-source-flow", TokenFlow)
        source.gap = gap
        source.set_tokens(a.source_tokens, src_values, scale=scale)
        source.border_title = literal(f"Source · {source_share:.0%} of |relevance| for {compact(tr.token)}")
        decoder = self.query_one("#s2s-decoder-flow", TokenFlow)
        decoder.gap = gap
        decoder.set_tokens(a.tokens, dec_values, target=tr.position, dim_from=tr.position + 1, scale=scale)
        decoder.scroll_to_token(tr.position)
        decoder.border_title = literal(f"Decoder prefix · {decoder_share:.0%} of |relevance|")
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
        self._n_source = len(a.source_tokens)
        texts = [side_label("src", s) for s in a.source_tokens]
        texts += [side_label("dec", d) for d in a.tokens[: tr.position]]
        top, bottom = ranked_sources(texts, [*src_values, *dec_values])
        sources = self.query_one("#sources", SourcesList)
        sources.show(top, bottom, total=sum(v for v in (*src_values, *dec_values) if v > 0))
        sources.border_title = literal(f"Top sources of {compact(tr.token)}")
        self._ranked = [s.index for s in top]
        self._jump = -1
        self.query_one(Legend).scale = scale

    def show_source(self, unit: int) -> None:
        """Mark ranked unit ``unit`` (a source token, or ``n_source + k``: decoder token k) on its side."""
        source = self.query_one("#s2s-source-flow", TokenFlow)
        decoder = self.query_one("#s2s-decoder-flow", TokenFlow)
        flow, other, index = (
            (source, decoder, unit) if unit < self._n_source else (decoder, source, unit - self._n_source)
        )
        other.highlight = None
        flow.highlight = index
        flow.scroll_to_token(index)

    def commands(self) -> Iterable[Command]:
        yield from self.method_commands()
        if self._ranked:
            yield ("Jump to top source", "Mark the most relevant token of either side (j)", lambda: self.action_jump(1))
