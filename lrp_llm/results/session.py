"""A saved session of the app: every explanation asked for, in the order they were made.

An entry is one explanation (one question explained with one method) with the question
and context as the user typed them and when it was made; a method switch of an answer is
an entry of its own. The file reuses :class:`Attribution`'s JSON for each entry, so it
is checked on load as completely as a single result file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lrp_llm.errors import InputError
from lrp_llm.results.attribution import Attribution
from lrp_llm.results.base import Fields, JsonResult


@dataclass
class SessionEntry:
    """One explanation of a session; ``time``: when it was made (ISO 8601, with seconds)."""

    question: str
    attribution: Attribution
    time: str
    context: str | None = None

    @property
    def method(self) -> str:
        return self.attribution.method

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two entries the same explanation: the model, the input it answered and
        the method (asking the same again, or opening the same file twice, replaces the entry)."""
        a = self.attribution
        return (a.model, tuple(a.input_ids[: a.prompt_length]), tuple(a.source_ids or ()), a.method)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "context": self.context,
            "time": self.time,
            "attribution": self.attribution.to_dict(),
        }

    @classmethod
    def from_dict(cls, f: Fields) -> SessionEntry:
        time = f.text("time")
        try:
            datetime.fromisoformat(time)
        except ValueError:
            f.fail("time", f"is {time!r}, not a date and time like '2026-01-31T12:00:00'")
        raw = f.obj("attribution").data
        try:
            attribution = Attribution.from_dict(raw)
        except InputError as exc:  # name the entry: "entries[2].attribution: targets[0].position is ..."
            raise InputError(f"{f.name('attribution')}: {exc}") from None
        context = f.optional_text("context")
        return cls(question=f.text("question"), attribution=attribution, time=time, context=context)


def now() -> str:
    """The local time, as a session entry records it."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass
class Session(JsonResult):
    """Every explanation of an app session (``xai-tui open SESSION.json`` reopens it without the model)."""

    SCHEMA = "xai-tui/session/1"

    entries: list[SessionEntry]
    meta: dict[str, Any] = field(default_factory=dict)

    def _fields(self) -> dict[str, Any]:
        return {"entries": [e.to_dict() for e in self.entries], "meta": dict(self.meta)}

    @classmethod
    def _from_fields(cls, d: Fields) -> Session:
        entries = [SessionEntry.from_dict(e) for e in d.objects("entries", nonempty=True)]
        return cls(entries=entries, meta=d.mapping("meta"))


__all__ = ["Session", "SessionEntry", "now"]
