"""Errors a user can cause. Each message says what was wrong and what to do."""


class XaiError(Exception):
    """Base class: the CLI prints ``str(error)`` on one line and exits non-zero."""


class UnsupportedModelError(XaiError):
    pass


class CheckpointError(XaiError):
    pass


class InputError(XaiError):
    pass


class Cancelled(XaiError):
    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)


def check_cancel(should_cancel) -> None:
    """Raise :class:`Cancelled` when the caller's ``should_cancel()`` says so (None: never)."""
    if should_cancel is not None and should_cancel():
        raise Cancelled()
