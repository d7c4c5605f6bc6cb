"""What every result type shares: JSON, atomic save/load, a schema string, the run metadata.

A result type (``Attribution``, ``ImageAttribution``, ``SimilarityExplanation``,
``PatchingResult``, ``Evaluation``) subclasses :class:`JsonResult`, names its ``SCHEMA`` and writes two
methods: ``_fields()`` (its data as plain Python values) and ``_from_fields(d)`` (the
inverse). The base adds the ``schema`` key, the NaN policy, ``to_json``/``from_json`` and
``save``/``load``.

NaN policy: JSON has no NaN or infinity, so every non-finite float is written as ``null``
(:func:`json_ready`) and every ``null`` where a number belongs is read back as NaN
(:func:`as_float`, :func:`float_array`). The files are strict JSON that any parser reads.
Files from earlier versions, which wrote the tokens ``NaN`` / ``Infinity``, still load
(``json.loads`` accepts those tokens).

Run metadata: :func:`run_meta` builds the ``meta`` dict of every run with the same keys
(kind, method, rules, steps, dtype, device, date, torch, version), so every report can show
the date and the environment of any result.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from lrp_llm.errors import InputError

R = TypeVar("R", bound="JsonResult")


def json_ready(value: Any) -> Any:
    """``value`` (dicts, lists, tuples, numbers, NumPy scalars and arrays) as JSON-ready data:
    non-finite floats become ``None``, NumPy values plain Python ones."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


def as_float(value: Any) -> float:
    """A number read from JSON: ``null`` (and a missing value) -> NaN."""
    return float("nan") if value is None else float(value)


def float_array(values: Iterable[Any], dtype: Any = np.float32) -> np.ndarray:
    """Nested lists of numbers read from JSON as an array; ``null`` -> NaN."""

    def walk(v: Any) -> Any:
        return [walk(x) for x in v] if isinstance(v, (list, tuple)) else as_float(v)

    return np.asarray(walk(list(values)), dtype=dtype)


TEMP_SUFFIX = ".xai-tui.tmp"
"""The ending of the writer's temporary files (``.NAME.XXXXXXXX.xai-tui.tmp`` next to NAME), so
stale ones are told apart from anything else in the folder."""
STALE_TEMP_SECONDS = 60.0
"""A temporary file of ours untouched this long belongs to a writer that died between its write
and its rename (the two are microseconds apart): the next write to the same name removes it."""


def _file_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output(path: str | os.PathLike[str], what: str = "output") -> Path:
    """``path`` as a :class:`Path` if a file can be written there without destroying anything but a
    regular file; else a one-line :class:`InputError`.

    Refused: an empty path, a folder, a symbolic link (also one to a regular file: the writer
    would replace the link, not write where it points), a device (``/dev/null``, ``/dev/stdout``
    is a link to one), a FIFO, a socket, a missing or read-only folder. Outputs are never
    streamed: pass a file name.
    """
    if not str(path).strip():
        raise InputError(f"the {what} file name is empty; pass a file name")
    p = Path(path).expanduser()
    try:
        st: os.stat_result | None = os.lstat(p)
    except FileNotFoundError:
        st = None
    except OSError as exc:  # e.g. a parent that is a file (ENOTDIR), a name too long
        raise InputError(f"cannot write {p}: {exc.strerror or exc}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p} is a folder; pass a file name for the output")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise InputError(
            f"{p} is {_file_kind(st.st_mode)}, not a regular file; pass the path of a regular file "
            "(outputs never replace links, devices, pipes or sockets)"
        )
    parent = p.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {p}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write {p}: the folder {parent} is not writable")
    return p


def _identity(path: str | os.PathLike[str]) -> tuple[Any, ...]:
    """What tells two spellings of one file apart from two files: its device and inode when it
    exists (hard links, ``./x``, symlinked folders), else its resolved path."""
    p = Path(path).expanduser()
    try:
        st = os.stat(p)
    except OSError:
        return ("path", os.path.normcase(os.path.realpath(p)))
    return ("inode", st.st_dev, st.st_ino)


def check_outputs(
    outputs: Mapping[str, str | os.PathLike[str] | None],
    inputs: Mapping[str, str | os.PathLike[str] | None] | None = None,
) -> None:
    """Check the output files of one run before any work: each with :func:`check_output`, none
    equal to another output or to an input. Keys say what each file is ("--json", "the input
    --data"); None: not given. A one-line :class:`InputError` names the clash."""
    seen: dict[tuple[Any, ...], str] = {}
    for label, path in outputs.items():
        if path is None:
            continue
        if not str(path).strip():
            raise InputError(f"{label} is empty; pass a file name")
        check_output(path)
        key = _identity(path)
        if key in seen:
            raise InputError(f"{seen[key]} and {label} name the same file {path}; give each output its own file")
        seen[key] = label
    for label, path in (inputs or {}).items():
        if path is None or not str(path).strip():
            continue
        clash = seen.get(_identity(path))
        if clash is not None:
            raise InputError(
                f"{clash} {outputs[clash]} is also {label}; writing it would destroy that file, "
                "choose another file name"
            )


def _temp_prefix(name: str) -> str:
    return f".{name[:200]}."  # room for the random part and the suffix within a 255-byte name


def _remove_stale_temps(folder: Path, name: str) -> None:
    """Remove the temporary files of ``name`` that a killed writer left (see STALE_TEMP_SECONDS)."""
    ours = re.compile(re.escape(_temp_prefix(name)) + r"[a-z0-9_]+" + re.escape(TEMP_SUFFIX))
    now = time.time()
    try:
        entries = os.scandir(folder)
    except OSError:
        return
    with entries:
        for entry in entries:
            if not ours.fullmatch(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and now - st.st_mtime > STALE_TEMP_SECONDS:
                    os.unlink(entry.path)
            except OSError:
                pass  # gone already, or not ours to remove


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never half a file.

    THE writer of every result and report. Replaces only a regular file (:func:`check_output`
    says what is refused), keeps an existing file's permission bits (a new file gets those of
    ``open()``: 0666 minus the umask), and removes stale temporary files of the same name left
    by a killed writer. Failures are a one-line :class:`InputError`.
    """
    p = check_output(path)
    folder = p.parent
    _remove_stale_temps(folder, p.name)
    try:
        mode = stat.S_IMODE(os.stat(p).st_mode)
    except FileNotFoundError:
        # mkstemp makes the file private (0600); give it the permissions open() would (0666 - umask),
        # so a report meant for sharing is readable like any other file the user writes.
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(p.name), suffix=TEMP_SUFFIX, dir=folder)
    except OSError as exc:
        raise InputError(f"cannot write {p}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.chmod(tmp, mode)
            f.write(text)
        os.replace(tmp, p)
    except BaseException as exc:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write {p}: {exc.strerror or exc}") from None
        raise


def run_meta(
    kind: str,
    *,
    method: str | None = None,
    rules: str | None = None,
    steps: int | None = None,
    dtype: Any = None,
    device: Any = None,
) -> dict[str, Any]:
    """The metadata of one run, the same keys for every kind of result.

    ``kind``: "causal-lm", "seq2seq", "image-classification", "similarity", "patching", "evaluation";
    ``dtype``/``device``: the model's (torch objects or strings). ``date`` is the UTC time
    now (ISO 8601, seconds); ``torch`` the torch version when torch is loaded.
    """
    from lrp_llm import __version__

    torch = sys.modules.get("torch")
    return {
        "kind": kind,
        "method": method,
        "rules": rules,
        "steps": steps,
        "dtype": None if dtype is None else str(dtype).replace("torch.", ""),
        "device": None if device is None else str(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": getattr(torch, "__version__", None),
        "version": __version__,
    }


class JsonResult:
    """Base of the result dataclasses: JSON with one NaN policy, atomic save, schema check."""

    SCHEMA: ClassVar[str]

    def _fields(self) -> dict[str, Any]:
        """The result's data as plain values (floats may be NaN; the base writes them as null)."""
        raise NotImplementedError

    @classmethod
    def _from_fields(cls: type[R], d: dict[str, Any]) -> R:
        """The result from a dict written by :meth:`_fields` (nulls where numbers were NaN)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, **json_ready(self._fields())}

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        schema = d.get("schema", cls.SCHEMA)  # dicts built by hand may leave it out
        if schema != cls.SCHEMA:
            raise InputError(f"not a {cls.__name__} (schema {schema!r}, expected {cls.SCHEMA!r})")
        return cls._from_fields(d)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls: type[R], text: str) -> R:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> None:
        write_atomic(path, self.to_json(indent=1))

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


__all__ = [
    "JsonResult",
    "as_float",
    "check_output",
    "check_outputs",
    "float_array",
    "json_ready",
    "run_meta",
    "write_atomic",
]
