"""Errors a user can cause. Each message says what was wrong and what to do."""

from __future__ import annotations

from collections.abc import Callable


class XaiError(Exception):
    """Base class: the CLI prints ``str(error)`` on one line and exits non-zero."""


class UnsupportedModelError(XaiError):
    pass


class CheckpointError(XaiError):
    pass


class InputError(XaiError):
    pass


class NonFiniteError(XaiError, FloatingPointError):
    """Relevance came out NaN or infinite (a FloatingPointError, so callers catching that still do)."""


class CheckpointWarning(UserWarning):
    """A checkpoint loaded, but not as its author saved it (e.g. tensors missing and allowed);
    the CLI prints it as one ``warning: ...`` line."""


class Cancelled(XaiError):
    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)


ShouldCancel = Callable[[], bool]
"""Polled between steps of long work; True asks it to stop (it raises :class:`Cancelled`)."""


def check_cancel(should_cancel: ShouldCancel | None) -> None:
    """Raise :class:`Cancelled` when the caller's ``should_cancel()`` says so (None: never)."""
    if should_cancel is not None and should_cancel():
        raise Cancelled()
