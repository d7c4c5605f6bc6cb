"""The Textual app: ``xai-tui [CHECKPOINT]`` and ``xai-tui open RESULT.json``.

The app paints before anything heavy is imported; torch, transformers and the model are
loaded by a thread worker. Slow work (loading, generating, explaining, exporting) runs
in thread workers that post typed messages (``tui.messages``) and never touch widgets;
their failures all arrive in :meth:`XaiApp.on_worker_state_changed`, the one place
errors are turned into a readable message in the status line and a notification. The
state the views show lives in the app's reactives, so every view stays in sync.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerState, get_current_worker

from lrp_llm.methods import METHODS, label
from lrp_llm.text import visible

from .backend import AskRequest, EncoderBackend, ImageBackend, ImageRequest, LoadOptions, ModelBackend, PatchRequest
from .messages import (
    AnswerToken,
    ExplanationReady,
    ExportDone,
    JobProgress,
    ModelLoaded,
    PartialExplanation,
    PromptTokens,
    ResultReady,
)
from .views import VIEWS, available_views, view

if TYPE_CHECKING:
    from lrp_llm.results.attribution import Attribution
    from lrp_llm.results.session import SessionEntry

    from .exporting import Export


JOB_GROUPS = ("explain", "similarity", "patching", "image", "compare", "components")  # worker groups that Esc cancels


def _view_bindings() -> list[Binding]:
    return [Binding(v.key, f"switch_view('{v.id}')", v.title, id=f"view.{v.id}", show=False) for v in VIEWS]


class XaiApp(App[None]):
    """Explain what a language model used to produce its answer, token by token."""

    TITLE = "xai-tui"
    # Absolute, so subclasses defined elsewhere (tests, benchmarks) find the files too.
    CSS_PATH: ClassVar = [
        Path(__file__).with_name(name)
        for name in (
            "app.tcss",
            "ask.tcss",
            "longrange.tcss",
            "similarity.tcss",
            "patching.tcss",
            "image.tcss",
            "compare.tcss",
        )
    ]
    DEFAULT_MODE: ClassVar[str] = "ask"
    BINDINGS: ClassVar = [
        Binding("f1,question_mark", "help", "Help", id="app.help"),
        Binding("ctrl+s", "export", "Export", id="app.export"),
        Binding("ctrl+o", "open", "Open", id="app.open", show=False),
        Binding("ctrl+shift+s", "save_session", "Save session", id="app.save_session", show=False),
        Binding("escape", "cancel", "Cancel job", id="app.cancel"),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", show=False, priority=True),
        *_view_bindings(),
    ]

    model_state: reactive[str] = reactive("none")
    """"none" (no model: a saved result), "loading", "ready" or "failed"."""
    attribution: reactive[Attribution | None] = reactive(None, always_update=True)
    """The explanation on screen (from a question, a method switch or a JSON file)."""
    target: reactive[int] = reactive(0)
    """Index of the selected answer token (0 = the first generated token)."""
    word_level: reactive[bool] = reactive(False)
    """Show relevance per word (sub-word tokens merged, relevance summed) instead of per token."""
    scale_all: reactive[bool] = reactive(False)
    """Colour scales over every token; False (default): special and chat-template tokens are left out of
    the scale (they are still coloured, clipped at full strength, and listed apart)."""
    available_methods: tuple[str, ...] = METHODS
    """Methods the loaded model's family offers (all until a model is loaded)."""
    method: reactive[str] = reactive("attnlrp")
    """Attribution method used for the next question and the one shown."""
    chat: reactive[bool] = reactive(True)
    """True: context + question in the chat template (QA); False: a plain prompt continued as is."""
    stream_prompt: reactive[tuple[str, ...] | None] = reactive(None)
    """Tokens of the prompt being answered while a question runs (None: no question running)."""
    stream_answer: reactive[tuple[str, ...]] = reactive(())
    """Answer tokens generated so far by the running question."""
    progress: reactive[tuple[str, int, int | None] | None] = reactive(None)
    """(label, done, total) of the running job, None when idle."""
    status: reactive[tuple[str, str]] = reactive(("", "info"))
    """(text, kind) of the status line; kind "info", "busy" or "error"."""
    similarity: reactive[Any] = reactive(None, always_update=True)
    """The similarity view's result (``lrp_llm.results.similarity.SimilarityExplanation``), or None."""
    patching: reactive[Any] = reactive(None, always_update=True)
    """The patching view's result (``patching.result.PatchingResult``), or None."""
    history: reactive[tuple[SessionEntry, ...]] = reactive((), always_update=True)
    """Every complete explanation of the session, oldest first (the History view; Save session)."""
    image: reactive[Any] = reactive(None, always_update=True)
    """The image view's result (``lrp_llm.results.image.ImageAttribution``), or None."""

    def __init__(
        self,
        backend: ModelBackend | None = None,
        *,
        result_path: str | None = None,
        method: str | None = None,
        question: str | None = None,
        context: str | None = None,
        chat: bool = True,
        max_new_tokens: int = 20,
        encoder: EncoderBackend | None = None,
        kind: str = "causal-lm",
        image: str | None = None,
    ) -> None:
        views = available_views(kind)
        if not views:
            from lrp_llm.errors import InputError

            raise InputError(f"the app has no view for a {kind} model; use the xai-tui subcommands (xai-tui --help)")
        # the kind's main view; before App.__init__, which makes DEFAULT_MODE the current mode
        self.DEFAULT_MODE = views[0].id
        super().__init__()
        self.model_kind = kind  # the checkpoint's kind ("causal-lm", "seq2seq", "image-classification")
        self.backend = backend
        self.encoder = encoder  # the similarity view's model, loaded on its first use
        self.result_path = result_path
        self.initial_question = question
        self.initial_context = context
        self.initial_image = image  # an image file to explain once the model has loaded (the image view)
        self.max_new_tokens = max_new_tokens
        self.source = ""  # where the shown result came from (a JSON path) when not asked here
        self.opened_results: list[str] = []  # every result file opened: an export never overwrites one
        self._job = 0
        self._current: dict[str, int] = {}  # the live job of each worker group
        self._pending: AskRequest | ImageRequest | None = None
        self._partial_job: int | None = None  # the job whose partial explanation is on screen
        self._asked: dict[int, tuple[str, str | None]] = {}  # job -> (question, context), for the history
        for v in views:  # a view's module is imported when it is first shown
            self.add_mode(v.id, lambda v=v: v.screen_class()())
        # None: the model family's default (the first of its methods), set when the model has loaded
        self._method_asked = method is not None
        self.set_reactive(XaiApp.method, method or "attnlrp")
        self.set_reactive(XaiApp.chat, chat and kind != "seq2seq")  # encoder-decoders take no chat template

    # ------------------------------------------------------------------ start-up
    def on_mount(self) -> None:
        self._update_title()

    def on_ready(self) -> None:
        # After the first frame: importing torch in a worker would slow the first paint.
        if self.result_path:
            self.open_result(self.result_path)
        elif self.backend is not None:
            if self.initial_question:
                self.ask(
                    AskRequest(self.initial_question, self.initial_context, self.chat, self.method, self.max_new_tokens)
                )
            if self.initial_image:
                self.explain_image(ImageRequest(self.initial_image, None, self.method))
            self.load_model()

    def load_model(self) -> None:
        """Load the backend's model in a worker (no-op when it is loaded)."""
        if self.backend is None:
            return
        if self.backend.loaded:
            self._take_methods(self.backend.methods())
            self.model_state = "ready"
            self._run_pending()
            return
        self.model_state = "loading"
        self.progress = ("loading model", 0, None)
        self.status = (f"loading {self.backend.name} …", "busy")
        self._load_model_worker(self.backend)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load_model_worker(self, backend: ModelBackend) -> None:
        summary = backend.load()
        self.post_message(ModelLoaded(backend.name, summary, backend.methods()))

    def on_model_loaded(self, message: ModelLoaded) -> None:
        self._take_methods(message.methods)
        self.model_state = "ready"
        self.progress = None
        next_step = "choose an image file" if self.model_kind == "image-classification" else "ask a question"
        self.status = (f"{message.name} loaded ({message.summary}); {next_step}", "info")
        self._run_pending()

    def _take_methods(self, methods: tuple[str, ...]) -> None:
        """The loaded model's methods (its family's default first): the method becomes the default where
        none was asked (and nothing is shown yet), or where the asked one is not offered (AttnLRP of a Mamba model)."""
        if not methods:
            return
        self.available_methods = methods
        if (not self._method_asked and self.attribution is None) or self.method not in methods:
            self.method = methods[0]
            if self._pending is not None:
                self._pending = dataclasses.replace(self._pending, method=self.method)

    def _run_pending(self) -> None:
        if self._pending is not None:
            request, self._pending = self._pending, None
            if isinstance(request, ImageRequest):
                self.explain_image(request)
            else:
                self.ask(request)

    def watch_model_state(self) -> None:
        self._update_title()

    def _update_title(self) -> None:
        if self.backend is None:
            self.sub_title = visible(f"saved result · {self.source or self.result_path or ''}")
        else:
            state = {"loading": "loading…", "ready": "", "failed": "failed to load"}.get(self.model_state, "")
            self.sub_title = visible(" · ".join(x for x in (self.backend.name, state) if x))

    # ---------------------------------------------------------------------- jobs
    def _new_job(self, group: str) -> int:
        """A new job number; results of older jobs of ``group`` are dropped from now on."""
        self._job += 1
        self._current[group] = self._job
        return self._job

    def _live(self, job: int, group: str | None = None) -> bool:
        if group is not None:
            return self._current.get(group) == job
        return job in self._current.values()

    # ----------------------------------------------------------------- questions
    def ask(self, request: AskRequest) -> None:
        """Generate and explain the answer to ``request`` (in a worker)."""
        if self.backend is None:
            self.show_error("no model is loaded (this is a saved result); press Ctrl+O to open a checkpoint")
            return
        if not request.question.strip():
            self.show_error("the question is empty; type a question (or a prompt) first")
            return
        job = self._new_job("explain")
        if not self.backend.loaded:
            self._pending = request
            if self.model_state == "failed":
                self.show_error("the model did not load; press Ctrl+O to open another checkpoint")
            else:
                self.status = ("the question runs as soon as the model has loaded", "busy")
            return
        self._asked[job] = (request.question, request.context)
        self.stream_prompt, self.stream_answer = (), ()
        self.progress = ("generating", 0, request.max_new_tokens)
        self.status = ("generating the answer … (Esc cancels)", "busy")
        self._ask_worker(job, self.backend, request)

    @work(thread=True, exclusive=True, group="explain", exit_on_error=False)
    def _ask_worker(self, job: int, backend: ModelBackend, request: AskRequest) -> None:
        worker = get_current_worker()
        post = self.post_message
        count = 0

        def on_token(text: str) -> None:
            nonlocal count
            count += 1
            post(AnswerToken(job, text))
            post(JobProgress(job, "generating", count, request.max_new_tokens))

        attribution = backend.ask(
            request,
            on_prompt=lambda tokens: post(PromptTokens(job, tokens)),
            on_token=on_token,
            on_partial=lambda partial: post(PartialExplanation(job, partial)),
            progress=lambda done, total: post(JobProgress(job, "explaining", done, total)),
            should_cancel=lambda: worker.is_cancelled,
        )
        post(ExplanationReady(job, attribution))

    def set_method(self, method: str) -> None:
        """Use ``method`` from now on; the shown explanation is recomputed with it."""
        if method == self.method and (self.attribution is None or self.attribution.method == method):
            return
        self.method = method
        a = self.attribution
        if a is None or a.method == method:
            return
        if self.backend is None or not self.backend.loaded:
            self.show_error(f"switching to {label(method)} needs the model; press Ctrl+O to load it")
            return
        job = self._new_job("explain")
        self._asked[job] = self._question_of(a)
        self.progress = ("explaining", 0, len(a.targets))
        self.status = (f"explaining with {label(method)} … (Esc cancels)", "busy")
        self._reexplain_worker(job, self.backend, a, method)

    @work(thread=True, exclusive=True, group="explain", exit_on_error=False)
    def _reexplain_worker(self, job: int, backend: ModelBackend, attribution: Attribution, method: str) -> None:
        worker = get_current_worker()
        result = backend.reexplain(
            attribution,
            method,
            on_partial=lambda partial: self.post_message(PartialExplanation(job, partial)),
            progress=lambda done, total: self.post_message(JobProgress(job, "explaining", done, total)),
            should_cancel=lambda: worker.is_cancelled,
        )
        self.post_message(ExplanationReady(job, result))

    def open_result(self, path: str) -> None:
        """Show a result saved as JSON (``xai-tui open``, Ctrl+O); no model needed."""
        self.opened_results.append(path)
        job = self._new_job("explain")
        self.progress = ("reading", 0, None)
        self.status = (f"reading {path} …", "busy")
        self._open_result_worker(job, path)

    @work(thread=True, exclusive=True, group="explain", exit_on_error=False)
    def _open_result_worker(self, job: int, path: str) -> None:
        from .commands.open import load_result, result_kind

        view, result = load_result(path)  # checked completely; a bad file is one line of error
        kind = result_kind(view, result)
        if view == "ask" and kind != self.model_kind:  # its view is not in this app (the views follow the kind)
            from lrp_llm.errors import InputError

            raise InputError(f"{path}: the explanation of a {kind} model; open it with `xai-tui open {path}`")
        source = str(Path(path).expanduser())
        if view == "ask":
            self.post_message(ExplanationReady(job, result, source=source))
        else:
            self.post_message(ResultReady(job, view, result, source))

    # ------------------------------------------------------------ worker output
    def on_prompt_tokens(self, message: PromptTokens) -> None:
        if self._live(message.job, "explain"):
            self.stream_prompt = tuple(message.tokens)

    def on_answer_token(self, message: AnswerToken) -> None:
        if self._live(message.job, "explain"):
            self.stream_answer = (*self.stream_answer, message.text)

    def on_job_progress(self, message: JobProgress) -> None:
        if self._live(message.job):
            self.progress = (message.label, message.done, message.total)
            total = f"/{message.total}" if message.total else ""
            self.status = (f"{message.label} {message.done}{total} … (Esc cancels)", "busy")

    def on_partial_explanation(self, message: PartialExplanation) -> None:
        """Colour the answer tokens explained so far; the user moves over them while the rest are computed."""
        if not self._live(message.job, "explain"):
            return
        a = message.attribution
        first = self._partial_job != message.job
        if first:  # the first of this job: start at the first answer token
            self._partial_job = message.job
            self.set_reactive(XaiApp.target, 0)
        self.attribution = a
        if first:  # the answer is generated: the views leave their streaming display
            self.stream_prompt, self.stream_answer = None, ()
        total = a.meta.get("answer_tokens", len(a.targets))
        self.status = (
            f"{len(a.targets)}/{total} answer tokens explained with {label(a.method)}; "
            "←/→ move over them while the rest are computed (Esc cancels)",
            "busy",
        )

    def on_explanation_ready(self, message: ExplanationReady) -> None:
        if not self._live(message.job, "explain"):
            return  # a newer request replaced this one
        a = message.attribution
        self.progress = None
        self.stream_prompt, self.stream_answer = None, ()
        if message.source:
            self.source = message.source
            self._update_title()
        self.method = a.method
        if self._partial_job != message.job:  # shown for the first time: from the first answer token
            self.set_reactive(XaiApp.target, 0)
        self._partial_job = None
        self.attribution = a
        self._record(message.job, a)
        where = f" from {message.source}" if message.source else ""
        self.status = (
            f"{len(a.targets)} answer tokens explained with {label(a.method)}{where}; "
            "←/→ or the mouse move over the answer",
            "info",
        )

    def on_result_ready(self, message: ResultReady) -> None:
        """A similarity or patching result (from its view, or a JSON file)."""
        if not self._live(message.job):
            return
        self.progress = None
        if message.view == "history":
            self._open_session(message.result, message.source)
            return
        if message.view == "similarity":
            self.similarity = message.result
        elif message.view == "patching":
            self.patching = message.result
        elif message.view == "image":
            if not any(v.id == "image" for v in available_views(self.model_kind)):
                self.show_error(f"{message.source} is an image explanation; open it with `xai-tui open FILE`")
                return
            self.image = a = message.result
            if message.source:
                self.source = message.source
                self._update_title()
            self.status = (
                f"class {a.label} (p {a.probability:.3f}) explained with {label(a.method)}; "
                "v: image / relevance / blend, Enter on a class explains it",
                "info",
            )
            return
        where = f" from {message.source}" if message.source else ""
        self.status = (f"{view(message.view).title} result ready{where}", "info")
        if message.source and self.current_mode != message.view:
            self.action_switch_view(message.view)

    # ------------------------------------------------------------------ history
    def _question_of(self, attribution: Attribution) -> tuple[str, str | None]:
        """(question, context) of the explanation on screen: its history entry's, else its input text."""
        from .history import entry_of, prompt_text

        entry = entry_of(self.history, attribution)
        return (entry.question, entry.context) if entry is not None else (prompt_text(attribution), None)

    def _record(self, job: int, attribution: Attribution) -> None:
        """Keep a complete explanation in the history (partial ones are not explanations yet)."""
        if attribution.meta.get("partial"):
            return
        from lrp_llm.results.session import SessionEntry, now

        from .history import recorded

        question, context = self._asked.pop(job, None) or self._question_of(attribution)
        self.history = recorded(self.history, SessionEntry(question, attribution, now(), context))

    def _open_session(self, session: Any, source: str) -> None:
        """Fill the history from a saved session and show its last entry."""
        from .history import recorded

        history = self.history
        for entry in session.entries:
            history = recorded(history, entry)
        self.history = history
        self.source = source
        self._update_title()
        self.show_entry(len(history) - 1)
        self.status = (f"session of {len(session.entries)} explanations from {source}; F7 lists them", "info")

    def show_entry(self, index: int) -> None:
        """Show history entry ``index`` again in the Ask view (nothing is recomputed)."""
        entry = self.history[index]
        self.set_reactive(XaiApp.target, 0)
        self.method = entry.method
        self.attribution = entry.attribution
        self.status = (
            f"{entry.question[:60]} · {label(entry.method)} (from the history; nothing recomputed)",
            "info",
        )
        main = next((v.id for v in available_views(self.model_kind) if v.id != "history"), None)
        if main is not None:
            self.action_switch_view(main)

    def action_save_session(self) -> None:
        from lrp_llm.results.session import Session

        from .screens.dialogs import PathDialog

        if not self.history:
            self.show_error("the history is empty; ask a question first, then save the session")
            return
        session = Session(list(self.history), {"model": self.backend.name if self.backend else ""})

        def chosen(answer: tuple[str, str] | None) -> None:
            if answer is not None:
                self._save_session_worker(session, answer[1], tuple(self.opened_results))

        self.push_screen(
            PathDialog(
                f"Save the session ({len(session.entries)} explanations)",
                "session.json",
                [("json", "Save")],
                hint="one JSON file; reopen it without the model: `xai-tui open FILE`",
            ),
            chosen,
        )

    @work(thread=True, group="export", exit_on_error=False)
    def _save_session_worker(self, session: Any, path: str, opened: tuple[str, ...]) -> None:
        from .commands.common import check_output_paths

        check_output_paths({"the session file": path}, inputs={f"the result opened from {p}": p for p in opened})
        session.save(path)  # atomic: a failed write leaves no half-written file
        self.post_message(ExportDone(path, "session"))

    # --------------------------------------------------------- other views' jobs
    def compare(self, a: str, b: str, method: str = "bilrp") -> None:
        """Explain why two texts are similar (the similarity view), in a worker."""
        if not a.strip() or not b.strip():
            self.show_error("both texts are needed; type sentence A and sentence B")
            return
        if self.encoder is None:
            self.encoder = EncoderBackend()
        job = self._new_job("similarity")
        self.progress = ("similarity", 0, None)
        self.status = ("explaining the similarity … (Esc cancels)", "busy")
        self._compare_worker(job, self.encoder, a, b, method)

    @work(thread=True, exclusive=True, group="similarity", exit_on_error=False)
    def _compare_worker(self, job: int, encoder: EncoderBackend, a: str, b: str, method: str) -> None:
        worker = get_current_worker()
        if not encoder.loaded:
            self.post_message(JobProgress(job, f"loading {encoder.name}", 0, None))
            encoder.load()
        self.post_message(JobProgress(job, "explaining the similarity", 0, None))
        result = encoder.compare(a, b, method, should_cancel=lambda: worker.is_cancelled)
        self.post_message(ResultReady(job, "similarity", result))

    def patch(self, request: PatchRequest) -> None:
        """Run a patching experiment (the patching view) on the loaded model, in a worker."""
        if self.backend is None or not self.backend.loaded:
            state = "is still loading" if self.model_state == "loading" else "is not loaded; press Ctrl+O"
            self.show_error(f"patching needs the language model, which {state}")
            return
        for name, value in (
            ("clean", request.clean),
            ("corrupted", request.corrupted),
            ("answer", request.answer),
            ("wrong", request.wrong),
        ):
            if not value.strip():
                self.show_error(f"the {name} field is empty; fill in all four fields")
                return
        job = self._new_job("patching")
        self.progress = ("patching", 0, None)
        self.status = ("patching … (Esc cancels)", "busy")
        self._patch_worker(job, self.backend, request)

    @work(thread=True, exclusive=True, group="patching", exit_on_error=False)
    def _patch_worker(self, job: int, backend: ModelBackend, request: PatchRequest) -> None:
        worker = get_current_worker()
        result = backend.patch(
            request,
            progress=lambda stage, done, total: self.post_message(JobProgress(job, stage, done, total)),
            should_cancel=lambda: worker.is_cancelled,
        )
        self.post_message(ResultReady(job, "patching", result))

    def explain_image(self, request: ImageRequest) -> None:
        """Explain a class of an image file (the image view), in a worker; waits for the model to load."""
        if self.backend is None:
            self.show_error("no model is loaded; press Ctrl+O to open an image classifier")
            return
        if not request.path.strip():
            self.show_error("no image file given; type the path of a PNG or JPEG file")
            return
        job = self._new_job("image")
        if not self.backend.loaded:
            self._pending = request
            if self.model_state == "failed":
                self.show_error("the model did not load; press Ctrl+O to open another checkpoint")
            else:
                self.status = ("the image is explained as soon as the model has loaded", "busy")
            return
        self.progress = ("explaining the image", 0, None)
        self.status = ("explaining the image … (Esc cancels)", "busy")
        self._image_worker(job, self.backend, request)

    @work(thread=True, exclusive=True, group="image", exit_on_error=False)
    def _image_worker(self, job: int, backend: ImageBackend, request: ImageRequest) -> None:
        worker = get_current_worker()
        result = backend.explain_image(request, should_cancel=lambda: worker.is_cancelled)
        self.post_message(ResultReady(job, "image", result))

    def on_export_done(self, message: ExportDone) -> None:
        self.status = (f"wrote {message.what} to {message.path}", "info")
        self.notify(visible(f"wrote {message.path}"), title=f"exported {message.what}", markup=False)

    @on(Worker.StateChanged)
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place where a worker's failure becomes a message on screen."""
        worker = event.worker
        if event.state == WorkerState.ERROR:
            from lrp_llm.errors import Cancelled

            if worker.group == "load":
                self.model_state = "failed"
            self.progress = None
            self.stream_prompt, self.stream_answer = None, ()
            if isinstance(worker.error, Cancelled):
                self.status = ("cancelled", "info")
            else:
                self.show_error(describe(worker.error))
        elif event.state == WorkerState.CANCELLED and not self._running_jobs():
            self.progress = None
            self.stream_prompt, self.stream_answer = None, ()
        if worker.group in JOB_GROUPS:  # the footer's "Esc Cancel job" follows whether a job runs
            self.refresh_bindings()

    def _running_jobs(self) -> bool:
        return any(w.group in JOB_GROUPS and w.is_running for w in self.workers)

    def show_error(self, text: str) -> None:
        """Show a user-facing error: status line (until the next job) and a notification."""
        self.status = (f"error: {text}", "error")
        self.notify(visible(text), title="error", severity="error", timeout=10, markup=False)

    # ------------------------------------------------------------------ actions
    def action_cancel(self) -> None:
        self._current.clear()  # late messages of the cancelled jobs are dropped
        self._pending = None
        for group in JOB_GROUPS:
            self.workers.cancel_group(self, group)
        self.progress = None
        self.stream_prompt, self.stream_answer = None, ()
        self.status = ("cancelled", "info")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return self._running_jobs() or self._pending is not None
        if action == "switch_view":
            return any(v.id == parameters[0] for v in available_views(self.model_kind))
        return True

    def action_switch_view(self, view_id: str) -> None:
        if view_id != self.current_mode and any(v.id == view_id for v in available_views(self.model_kind)):
            self.switch_mode(view_id)

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        intro = HELP_INTRO
        if self.model_kind == "image-classification":
            from .screens.image import IMAGE_HELP_INTRO as intro
        self.push_screen(HelpScreen(self.help_sections(), intro=intro, kind=self.model_kind))

    def help_sections(self) -> list[tuple[str, type]]:
        from .screens.dialogs import PathDialog
        from .widgets.heatgrid import HeatGrid
        from .widgets.sources import SourcesList
        from .widgets.tokenflow import AnswerTokens

        sections: list[tuple[str, type]] = [("everywhere", XaiApp), ("everywhere", PaletteKeys)]
        sections += [(v.title, v.screen_class()) for v in available_views(self.model_kind)]
        sections += [("answer tokens", AnswerTokens), ("sources list", SourcesList)]
        sections += [("grids", HeatGrid), ("dialogs", PathDialog)]
        return sections

    def action_export(self, fmt: str | None = None) -> None:
        from .screens.base import ViewScreen
        from .screens.dialogs import PathDialog

        screen = self.screen
        result = screen.export_target() if isinstance(screen, ViewScreen) else None
        if result is None:
            self.show_error("nothing to export yet; ask a question first")
            return
        if self._partial_job is not None and self._live(self._partial_job, "explain"):
            self.show_error("the answer is still being explained; export when it is done (or press Esc to stop)")
            return
        path = f"{result.stem}.{fmt or 'html'}"

        def chosen(answer: tuple[str, str] | None) -> None:
            if answer is not None:
                self._export_worker(result, answer[1], answer[0], tuple(self.opened_results))

        self.push_screen(
            PathDialog(
                "Export the current view",
                path,
                [("html", "HTML"), ("json", "JSON")],
                hint="HTML: a self-contained page to share; JSON: reopen with `xai-tui open FILE`",
            ),
            chosen,
        )

    @work(thread=True, group="export", exit_on_error=False)
    def _export_worker(self, result: Export, path: str, fmt: str, opened: tuple[str, ...]) -> None:
        from .exporting import write

        write(result, path, fmt, inputs=opened)
        self.post_message(ExportDone(path, fmt.upper()))

    def action_open(self) -> None:
        from .screens.dialogs import PathDialog

        def chosen(answer: tuple[str, str] | None) -> None:
            if answer is None:
                return
            choice, path = answer
            if choice == "json":
                self.open_result(path)
            else:
                self._open_checkpoint(path)

        self.push_screen(
            PathDialog(
                "Open a checkpoint (HF folder or .gguf) or a saved result (.json)",
                os.getcwd() + os.sep,
                [("model", "Load model"), ("json", "Open result")],
            ),
            chosen,
        )

    def _open_checkpoint(self, path: str) -> None:
        """Load the checkpoint at ``path`` in place of the current model; one of another kind
        (an image classifier in the text app) is pointed to its own app with one line."""
        from lrp_llm.checkpoints.loading import checkpoint_kind
        from lrp_llm.errors import XaiError

        options = self.backend.options if self.backend is not None else LoadOptions()
        try:
            kind = checkpoint_kind(path, allow_pickle=options.allow_pickle)
        except XaiError as exc:
            self.show_error(describe(exc))
            return
        if kind != self.model_kind:
            self.show_error(
                f"{path} is a {kind} model and this app shows {self.model_kind} models; open it with `xai-tui {path}`"
            )
            return
        backend = ImageBackend if kind == "image-classification" else ModelBackend
        self.backend = backend(dataclasses.replace(options, path=path))
        self.source = ""
        self.load_model()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        from .screens.base import ViewScreen

        yield from super().get_system_commands(screen)
        yield SystemCommand("Help", "Every key binding and what it does", self.action_help)
        yield SystemCommand(
            "Export HTML", "Write the current view as a self-contained HTML page", lambda: self.action_export("html")
        )
        yield SystemCommand(
            "Export JSON",
            "Write the current result as JSON (reopen with xai-tui open)",
            lambda: self.action_export("json"),
        )
        yield SystemCommand(
            "Open checkpoint or result", "Load another model, or show a saved JSON result", self.action_open
        )
        if self.history:  # a session to save
            yield SystemCommand(
                "Save session",
                "Write every explanation of the History to one JSON file (Ctrl+Shift+S; reopen with xai-tui open)",
                self.action_save_session,
            )
        if self.progress is not None:
            yield SystemCommand("Cancel", "Stop the running job", self.action_cancel)
        for v in available_views(self.model_kind):
            if v.id != self.current_mode:
                yield SystemCommand(
                    f"View: {v.title}",
                    f"Switch to the {v.title} view ({v.key.upper()})",
                    lambda v=v: self.action_switch_view(v.id),
                )
        if isinstance(screen, ViewScreen):
            for title, help_text, callback in screen.commands():
                yield SystemCommand(title, help_text, callback)


class PaletteKeys:
    """Keys Textual itself provides, listed in the help like ours."""

    BINDINGS: ClassVar = [
        Binding(
            App.COMMAND_PALETTE_BINDING,
            "command_palette",
            "Command palette: every action of this view",
            id="app.palette",
        ),
        Binding("tab,shift+tab", "focus_next", "Move between fields and panels", id="app.focus"),
    ]


HELP_INTRO = (
    "Type a question (and optionally a context passage), press Enter: the answer appears token by token, "
    "then every answer token is explained. Move over the answer with ←/→ or the mouse: the input is coloured "
    "by that token's relevance (red supports it, blue speaks against it)."
)


def describe(error: BaseException | None) -> str:
    from .cli import describe_error

    return describe_error(error) if error is not None else "unknown error"


def run_app(app: XaiApp) -> int:
    """Run the app in the terminal; returns the exit code."""
    app.run()
    return int(app.return_code or 0)


__all__ = ["HELP_INTRO", "XaiApp", "run_app"]
