"""The model behind the app: load it, answer a question, explain the answer.

No Textual here: the app's thread workers call these methods and turn the callbacks
into messages. Every method that touches the model holds ``lock``, so a new request
waits until a cancelled one has let go of the model (the LRP rules patch the model
instance while they run). Tests build a backend around a tiny model with
:meth:`ModelBackend.from_model`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from lrp_llm.results.attribution import Attribution

Progress = Callable[[int, int], None]
ShouldCancel = Callable[[], bool]

DEFAULT_NEW_TOKENS = 20
BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct (bundled)"
BUNDLED_ENCODER_NAME = "all-MiniLM-L6-v2 (bundled)"
B = TypeVar("B", bound="_Backend")


@dataclass(frozen=True)
class AskRequest:
    """What the user asked: ``question`` with an optional ``context`` passage.

    ``chat``: wrap it in the model's chat template (the QA mode); False is the plain
    prompt mode (the text is continued as it is).
    """

    question: str
    context: str | None = None
    chat: bool = True
    method: str = "attnlrp"
    max_new_tokens: int = DEFAULT_NEW_TOKENS


@dataclass(frozen=True)
class ImageRequest:
    """Explain class ``target`` (index, label or None: the predicted class) of the image file ``path``."""

    path: str
    target: int | str | None = None
    method: str = "attnlrp"


@dataclass(frozen=True)
class LoadOptions:
    """How to load the checkpoint (the CLI's model options)."""

    path: str | None = None  # None: the bundled demo model
    device: str = "cpu"
    dtype: str = "auto"
    device_map: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    allow_missing: bool = False  # tensors missing from the checkpoint: randomly initialised, with a warning
    revision: str | None = None  # of an ``org/name`` from the Hugging Face cache
    allow_download: bool = False  # let an ``org/name`` missing from the cache be downloaded

    @classmethod
    def from_args(cls, args: Any, path: str | None = None) -> LoadOptions:
        """The model options of a command line (``tui.commands.common.add_model_args``); ``path``
        when given replaces ``args.model``."""
        return cls(
            path=path or args.model,
            device=args.device,
            dtype=args.dtype,
            device_map=args.device_map,
            allow_pickle=args.allow_pickle,
            trust_remote_code=args.trust_remote_code,
            allow_missing=getattr(args, "allow_missing_weights", False),
            revision=getattr(args, "revision", None),
            allow_download=getattr(args, "allow_download", False),
        )

    def load_model(self, *, encoder: bool = False) -> tuple[Any, Any]:
        """(model, tokenizer) by :func:`lrp_llm.checkpoints.loading.load_model` with these options
        (``encoder``: by ``load_encoder``, whose default is the bundled embedding model)."""
        from lrp_llm.checkpoints.loading import load_encoder, load_model

        return (load_encoder if encoder else load_model)(
            self.path,
            device=self.device,
            dtype=self.dtype,
            device_map=self.device_map,
            allow_pickle=self.allow_pickle,
            trust_remote_code=self.trust_remote_code,
            allow_missing=self.allow_missing,
            revision=self.revision,
            allow_download=self.allow_download,
        )


def display_name(path: str) -> str:
    """A checkpoint's name on screen: a folder's or file's own name, a Hub name ``org/name`` whole."""
    from pathlib import Path

    from lrp_llm.checkpoints.hub import is_repo_name

    if is_repo_name(path) and not Path(path).expanduser().exists():
        return path
    return PurePath(path).name or str(path)


class _Backend:
    """A model and its tokenizer behind ``lock``, loaded on first use from ``options``."""

    BUNDLED_NAME: ClassVar[str]  # the display name when ``options.path`` is None
    GIVEN_NAME: ClassVar[str]  # the display name of a model handed to from_model without one
    NOT_LOADED: ClassVar[str]  # the error of a request before the model is loaded

    def __init__(self, options: LoadOptions | None = None, *, name: str | None = None) -> None:
        self.options = options or LoadOptions()
        path = self.options.path
        self.name = name or (self.BUNDLED_NAME if path is None else display_name(path))
        self.lock = threading.Lock()
        self.model: Any = None
        self.tokenizer: Any = None
        self.load_warnings: list[str] = []

    @classmethod
    def from_model(cls: type[B], model: Any, tokenizer: Any, name: str | None = None) -> B:
        """A backend around an already loaded model (tests, notebooks)."""
        backend = cls(name=name or cls.GIVEN_NAME)
        backend.model, backend.tokenizer = model, tokenizer
        return backend

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def _load_checkpoint(self) -> tuple[Any, Any]:
        """(model, tokenizer) read from ``options``."""
        raise NotImplementedError

    def _load(self) -> None:
        """Load the model unless it is loaded; the caller holds ``lock``. Warnings of the load
        (tensors missing and allowed) are kept in ``load_warnings`` for the screen to show:
        printed to stderr they would garble it."""
        if self.model is None:
            import warnings

            from lrp_llm.errors import CheckpointWarning

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", CheckpointWarning)
                self.model, self.tokenizer = self._load_checkpoint()
            self.load_warnings = [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]

    def _check_loaded(self) -> None:
        if self.model is None:
            from lrp_llm.errors import CheckpointError

            raise CheckpointError(self.NOT_LOADED)


class ModelBackend(_Backend):
    """A causal LM and its tokenizer, loaded on first use from ``options``."""

    BUNDLED_NAME = BUNDLED_MODEL_NAME
    GIVEN_NAME = "model"
    NOT_LOADED = "no model is loaded; open a checkpoint first"

    def _load_checkpoint(self) -> tuple[Any, Any]:
        return self.options.load_model()

    def load(self) -> str:
        """Load the model (a no-op when loaded); returns a one-line summary."""
        with self.lock:
            self._load()
            return self.summary()

    def methods(self) -> tuple[str, ...]:
        """Methods the loaded model's family offers, the family's default first."""
        from lrp_llm.methods import methods_for

        return methods_for(self.model)

    def summary(self) -> str:
        model = self.model
        params = sum(p.numel() for p in model.parameters())
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        kind = getattr(model.config, "model_type", type(model).__name__)
        warning = "; WARNING: tensors missing from the checkpoint are random" if self.load_warnings else ""
        return f"{kind}, {params / 1e6:.1f}M parameters, {dtype}{warning}"

    def ask(
        self,
        request: AskRequest,
        *,
        on_prompt: Callable[[list[str]], None] | None = None,
        on_token: Callable[[str], None] | None = None,
        on_partial: Callable[[Attribution], None] | None = None,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
    ) -> Attribution:
        """Generate the answer (streamed through ``on_token``) and explain every token of it.

        ``on_partial(attribution)``: the answer with the tokens explained so far (the first after one
        forward and one backward pass; ``meta["partial"]`` is True), each time one more is done."""
        import time

        from lrp_llm.engines.explain import ENGINES, explain, text_kind
        from lrp_llm.engines.generation import token_strings
        from lrp_llm.errors import InputError

        if not request.question.strip():
            raise InputError("the question is empty; type a question (or a prompt) first")
        with self.lock:
            self._check_loaded()
            start = time.perf_counter()
            # the engine's prompt: a causal LM's (chat template or plain), an encoder-decoder's source
            engine = ENGINES[text_kind(self.model)]
            prompt_ids, template = engine.prompt_ids(
                self.tokenizer, request.question, request.context or None, chat=request.chat, system=None
            )
            if on_prompt is not None:
                on_prompt(token_strings(self.tokenizer, prompt_ids))
            answer_ids: list[int] = []

            def decode(token_id: int) -> None:
                answer_ids.append(token_id)
                if on_token is not None:
                    on_token(token_strings(self.tokenizer, [token_id])[0])

            return explain(
                self.model,
                self.tokenizer,
                prompt_ids=prompt_ids,
                generate=request.max_new_tokens,
                method=request.method,
                model_name=self.name,
                progress=progress,
                on_token=decode,
                should_cancel=should_cancel,
                on_target=self._partials(on_partial, request.method, prompt_ids, answer_ids, start, template),
                template_positions=template,
                chat=request.chat or None,  # explain refuses a chat template for encoder-decoders
            )

    def reexplain(
        self,
        attribution: Attribution,
        method: str,
        *,
        on_partial: Callable[[Attribution], None] | None = None,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
        components: bool = False,
    ) -> Attribution:
        """The same prompt and answer explained with another ``method`` (no new generation);
        ``on_partial`` as for :meth:`ask`; ``components``: also each token's component relevance."""
        import time

        from lrp_llm.engines.explain import explain

        with self.lock:
            self._check_loaded()
            n = attribution.prompt_length
            prompt_ids, answer_ids = attribution.input_ids[:n], attribution.input_ids[n:]
            template = attribution.meta.get("template_positions")
            if attribution.source_ids is not None:  # encoder-decoders: the prompt is the source
                prompt_ids = attribution.source_ids
            return explain(
                self.model,
                self.tokenizer,
                prompt_ids=prompt_ids,
                answer_ids=answer_ids,
                method=method,
                model_name=self.name,
                progress=progress,
                should_cancel=should_cancel,
                on_target=self._partials(on_partial, method, prompt_ids, answer_ids, time.perf_counter(), template),
                template_positions=template,
                components=components,
            )

    def component_method(self, method: str) -> str:
        """``method`` when component relevance exists for it (a gradient x input method the model's family
        offers), else the family's default method (the Components view explains with it)."""
        from lrp_llm.methods import get_method

        offered = self.methods()
        if method in offered and get_method(method).computation == "gradient-x-input":
            return method
        return offered[0]

    def _component_sites(self, attribution: Attribution, target: int, site: str) -> list[str]:
        """The sites a listed component stands for: itself, or a Mamba-2 SSM head's channels."""
        from lrp_llm.analyses.components import component_sites

        return component_sites(self.model, attribution.targets[target].components, site)

    def conditional(self, attribution: Attribution, target: int, site: str):
        """The conditional heatmap (:func:`lrp_llm.analyses.components.conditional_relevance`) of answer
        token ``target`` through the component ``site`` (a Mamba-2 SSM head: its channels together), with the
        attribution's method."""
        from lrp_llm.analyses.components import conditional_relevance

        with self.lock:
            self._check_loaded()
            t = attribution.targets[target]
            selection = self._component_sites(attribution, target, site)
            return conditional_relevance(
                self.model, attribution.input_ids[: t.position + 1], t.position, [selection], method=attribution.method
            )

    def ablate(self, attribution: Attribution, target: int, site: str, op: str = "zero") -> dict[str, Any]:
        """Answer token ``target`` predicted again with the component ``site`` ablated (``op``: "zero" or
        "mean", :mod:`patching.interventions`, at every position; a Mamba-2 SSM head: all its channels; a routed
        expert: zero only, through its routing weight, :mod:`patching.experts`): the old and new logit and probability of
        that token, and the new top token with its probability."""
        import torch

        from lrp_llm.engines.generation import token_strings
        from lrp_llm.errors import InputError
        from patching.interventions import intervene, mean_ablate, zero

        if op not in ("zero", "mean"):
            raise InputError(f"unknown ablation '{op}'; choose zero or mean")
        with self.lock:
            self._check_loaded()
            t = attribution.targets[target]
            token_id = int(attribution.input_ids[t.position])
            device = next(self.model.parameters()).device
            ids = torch.tensor([attribution.input_ids[: t.position]], device=device)
            sites = self._component_sites(attribution, target, site)
            edits = [zero(s) if op == "zero" else mean_ablate(s) for s in sites]
            with torch.no_grad():
                before = self.model(ids).logits[0, -1].double()
                with intervene(self.model, *edits):
                    after = self.model(ids).logits[0, -1].double()
            p_before, p_after = before.softmax(-1), after.softmax(-1)
            top = int(after.argmax())
            return {
                "site": site,
                "op": op,
                "token": token_strings(self.tokenizer, [token_id])[0],
                "logit": float(before[token_id]),
                "probability": float(p_before[token_id]),
                "new_logit": float(after[token_id]),
                "new_probability": float(p_after[token_id]),
                "new_top": token_strings(self.tokenizer, [top])[0],
                "new_top_probability": float(p_after[top]),
            }

    def _partials(
        self,
        on_partial: Callable[[Attribution], None] | None,
        method: str,
        prompt_ids: list[int],
        answer_ids: list[int],
        start: float,
        template: list[int] | None = None,
    ) -> Callable[[int, Any], None] | None:
        """An ``on_target`` for :func:`~lrp_llm.engines.explain.explain` that hands ``on_partial`` the
        answer with its explained tokens so far. ``answer_ids`` is complete when the first target comes
        (the answer is generated before it is explained); ``template``: the prompt's template positions.
        Encoder-decoders (targets with ``source_relevance``): ``prompt_ids`` is the source, the tokens are
        the decoder's (its start token, then the answer), as :func:`~lrp_llm.engines.explain.explain`
        returns them."""
        if on_partial is None:
            return None
        import time

        from lrp_llm.engines.generation import token_strings
        from lrp_llm.results.attribution import Attribution

        done: list[Any] = []
        ids: list[int] = []
        tokens: list[str] = []
        source: dict[str, Any] = {}  # source_tokens and source_ids of an encoder-decoder
        prompt_length = len(prompt_ids)

        def on_target(index: int, target: Any) -> None:
            nonlocal prompt_length
            if not ids:  # the answer is complete by now: its strings once
                if target.source_relevance is not None:
                    from lrp_llm.engines.generation import decoder_start_id

                    ids.extend([decoder_start_id(self.model), *answer_ids])
                    prompt_length = 1
                    source.update(source_tokens=token_strings(self.tokenizer, prompt_ids), source_ids=list(prompt_ids))
                else:
                    ids.extend([*prompt_ids, *answer_ids])
                tokens.extend(token_strings(self.tokenizer, ids))
            done.append(target)
            on_partial(
                Attribution(
                    model=self.name,
                    method=method,
                    tokens=list(tokens),
                    input_ids=list(ids),
                    prompt_length=prompt_length,
                    targets=list(done),
                    seconds=time.perf_counter() - start,
                    meta={
                        "partial": True,
                        "answer_tokens": len(answer_ids),
                        "template_positions": [k for k in template or () if k < len(prompt_ids)],
                    },
                    **source,
                )
            )

        return on_target

    def patch(self, request: PatchRequest, *, progress=None, should_cancel: ShouldCancel | None = None):
        """Run a patching experiment: a ``patching.result.PatchingResult``.

        ``progress(stage, done, total)``; stages are e.g. "sweep denoise", "relp denoise".
        """
        from patching.experiment import run_patching

        with self.lock:
            self._check_loaded()
            return run_patching(
                self.model,
                self.tokenizer,
                request.clean,
                request.corrupted,
                request.answer,
                request.wrong,
                sites=request.sites,
                method=request.method,
                model_name=self.name,
                progress=progress,
                should_cancel=should_cancel,
            )


@dataclass(frozen=True)
class PatchRequest:
    """A patching experiment: the clean and corrupted prompts and the two answer tokens."""

    clean: str
    corrupted: str
    answer: str
    wrong: str
    sites: tuple[str, ...] = ("resid",)
    method: str = "both"  # sweep, relp or both


class EncoderBackend(_Backend):
    """A sentence-embedding model for the similarity view (default: the bundled all-MiniLM-L6-v2).

    Holds one ``SimilarityExplainer`` per method, so each text's first-order map is
    computed once per method however often it is compared.
    """

    BUNDLED_NAME = BUNDLED_ENCODER_NAME
    GIVEN_NAME = "encoder"
    NOT_LOADED = "the embedding model is not loaded"

    def __init__(self, options: LoadOptions | None = None, *, name: str | None = None) -> None:
        super().__init__(options, name=name)
        self._explainers: dict[str, Any] = {}

    def _load_checkpoint(self) -> tuple[Any, Any]:
        return self.options.load_model(encoder=True)

    def load(self) -> None:
        with self.lock:
            self._load()

    def compare(self, a: str, b: str, method: str = "bilrp", *, should_cancel: ShouldCancel | None = None):
        """Why ``a`` and ``b`` are similar: a ``lrp_llm.results.similarity.SimilarityExplanation``."""
        from lrp_llm.analyses.bilrp import SimilarityExplainer

        with self.lock:
            self._check_loaded()
            explainer = self._explainers.get(method)
            if explainer is None:
                explainer = SimilarityExplainer(self.model, self.tokenizer, method=method, model_name=self.name)
                self._explainers[method] = explainer
            return explainer.explain(a, b, should_cancel=should_cancel)


class ImageBackend(ModelBackend):
    """An image classifier (ViT) and its image processor (``tokenizer`` holds the processor:
    ``load_model`` returns (model, image processor) for this kind)."""

    GIVEN_NAME = "image classifier"

    def explain_image(self, request: ImageRequest, *, should_cancel: ShouldCancel | None = None):
        """The :class:`~lrp_llm.results.image.ImageAttribution` of ``request`` (its method when the
        model's family offers it, else the family's default)."""
        from lrp_llm.engines.vision import explain_image
        from lrp_llm.errors import Cancelled

        with self.lock:
            self._check_loaded()
            if should_cancel is not None and should_cancel():
                raise Cancelled("cancelled")
            offered = self.methods()
            return explain_image(
                self.model,
                self.tokenizer,
                request.path,
                target=request.target,
                method=request.method if request.method in offered else offered[0],
                model_name=self.name,
            )
