"""Typed messages that the app's thread workers post (a worker never touches a widget).

Every message carries ``job``, the number of the request it belongs to, so results of a
request that was replaced or cancelled meanwhile are recognised and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from lrp_llm.results.attribution import Attribution


@dataclass
class ModelLoaded(Message):
    """The model finished loading; ``summary`` is one line about it."""

    name: str
    summary: str
    # the methods this model's family offers, its default first (empty: unknown)
    methods: tuple[str, ...] = ()


@dataclass
class PromptTokens(Message):
    """The prompt was tokenised (shown while the answer is generated)."""

    job: int
    tokens: list[str]


@dataclass
class AnswerToken(Message):
    """One more generated token (decoded text)."""

    job: int
    text: str


@dataclass
class JobProgress(Message):
    """``done`` of ``total`` steps of the running job (``total`` None: unknown).

    Replaceable: a newer progress message supersedes one still queued, so a fast loop
    cannot flood the message queue.
    """

    job: int
    label: str
    done: int = 0
    total: int | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobProgress)


@dataclass
class ExplanationReady(Message):
    """A finished explanation (from a question, a method switch, or a JSON file)."""

    job: int
    attribution: Attribution
    source: str = ""  # e.g. the JSON file it was read from


@dataclass
class PartialExplanation(Message):
    """The answer with the tokens explained so far (``attribution.meta["partial"]``), while the
    rest are computed. Replaceable: a newer one of the same job supersedes one still queued."""

    job: int
    attribution: Attribution

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PartialExplanation) and message.job == self.job


@dataclass
class ExportDone(Message):
    """A file was written."""

    path: str
    what: str


@dataclass
class ResultReady(Message):
    """A finished result of another view (similarity, patching): ``view`` is its id."""

    job: int
    view: str
    result: Any
    source: str = ""  # the JSON file it was read from
