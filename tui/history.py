"""The session's history: every complete explanation shown in the app, in the order made.

Pure functions on tuples of :class:`~lrp_llm.results.session.SessionEntry` (the app keeps the
tuple in its ``history`` reactive); the History view lists it and the app saves it as a
:class:`~lrp_llm.results.session.Session`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lrp_llm.results.attribution import Attribution
    from lrp_llm.results.session import SessionEntry


def recorded(history: tuple[SessionEntry, ...], entry: SessionEntry) -> tuple[SessionEntry, ...]:
    """``history`` with ``entry`` last; an entry of the same explanation (same input, model and
    method: the question asked again, the same file opened twice) is replaced, not repeated."""
    return (*(e for e in history if e.key != entry.key), entry)


def entry_of(history: tuple[SessionEntry, ...], attribution: Attribution | None) -> SessionEntry | None:
    """The entry whose explanation is ``attribution`` (the object itself, not an equal one)."""
    return next((e for e in reversed(history) if e.attribution is attribution), None)


def prompt_text(attribution: Attribution) -> str:
    """What was asked, when only the explanation is known (a result file): its input text."""
    return "".join(attribution.source_tokens or attribution.prompt_tokens).strip()


__all__ = ["entry_of", "prompt_text", "recorded"]
