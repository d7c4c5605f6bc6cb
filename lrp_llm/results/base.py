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
from typing import Any, ClassVar, NoReturn, TypeVar

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
    by a killed writer. A refused path is a one-line :class:`InputError`; a failing disk (full,
    read-only) raises its ``OSError``, after removing the temporary file: the previous file stays.
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
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(p.name), suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.chmod(tmp, mode)
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
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


# ------------------------------------------------------------------ reading a file
REQUIRED: Any = object()
"""The default of a :class:`Fields` accessor whose field must be there."""


def _json_kind(value: Any) -> str:
    """How a JSON value is named in a message: "a string ('x')", "a list", "null", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:20] + "…"
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "a list"
    return "an object"


class Fields:
    """One JSON object of a result file, read field by field: every accessor checks the type
    (and the range, the length, the shape) of what it returns and raises a one-line
    :class:`InputError` naming the field as a path (``targets[2].relevance``), so a result
    type's ``_from_fields`` is a list of declarations and nothing invalid gets past it.

    NaN policy on reading: ``null`` where a number belongs is NaN (the writer writes every
    non-finite float as null; files of earlier versions wrote the token ``NaN``), also in
    arrays. Infinities (the token ``Infinity``, or a number beyond the array's float32 range
    such as 1e308) are refused in arrays, which views and reports scale their colours by;
    scalars keep them, as earlier versions wrote them.
    """

    def __init__(self, data: Any, where: str = "") -> None:
        if not isinstance(data, dict):
            raise InputError(f"{where or 'the result'} is {_json_kind(data)}, expected an object")
        self.data: dict[str, Any] = data
        self.where = where

    @classmethod
    def of(cls, data: Fields | dict[str, Any]) -> Fields:
        return data if isinstance(data, Fields) else cls(data)

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, problem: str) -> NoReturn:
        """Refuse the file: ``{field} {problem}`` (``problem`` like "has 2 values but ...")."""
        raise InputError(f"{self.name(key)} {problem}")

    def has(self, key: str) -> bool:
        return key in self.data

    def _raw(self, key: str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is REQUIRED:
            raise InputError(f"{self.name(key)} is missing")
        return default

    # -------------------------------------------------------------- scalars
    def _text(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise InputError(f"{name} is {_json_kind(value)}, expected a string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"{name} is not valid Unicode (a lone surrogate)") from None
        return value

    def text(self, key: str, default: Any = REQUIRED, *, choices: Iterable[str] | None = None) -> str:
        """A string; with ``choices``, one of them."""
        value = self._raw(key, default)
        if value is default and key not in self.data:
            return value
        value = self._text(self.name(key), value)
        if choices is not None:
            allowed = tuple(choices)
            if value not in allowed:
                self.fail(key, f"is {value!r}, not one of: {', '.join(allowed)}")
        return value

    def optional_text(self, key: str) -> str | None:
        """A string or null (also when missing)."""
        return None if self.data.get(key) is None else self.text(key)

    def integer(self, key: str, default: Any = REQUIRED, *, low: int | None = None, high: int | None = None) -> int:
        """A whole number (not a boolean, not 3.0), ``low <= n <= high`` when given."""
        value = self._raw(key, default)
        if value is default and key not in self.data:
            return value
        return self._integer(self.name(key), value, low, high)

    @staticmethod
    def _integer(name: str, value: Any, low: int | None, high: int | None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name} is {_json_kind(value)}, expected a whole number")
        if low is not None and value < low:
            raise InputError(f"{name} is {value}, below the smallest allowed value {low}")
        if high is not None and value > high:
            raise InputError(f"{name} is {value}, above the largest allowed value {high}")
        return value

    def optional_integer(self, key: str, *, low: int | None = None) -> int | None:
        return None if self.data.get(key) is None else self.integer(key, low=low)

    @staticmethod
    def _number(name: str, value: Any) -> float:
        if value is None:
            return float("nan")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{name} is {_json_kind(value)}, expected a number")
        try:
            return float(value)
        except OverflowError:  # a whole number beyond the float range
            raise InputError(f"{name} is too large a number") from None

    def number(self, key: str, default: Any = float("nan")) -> float:
        """A number; null (and, with the default, a missing key) is NaN."""
        return self._number(self.name(key), self._raw(key, default))

    def flag(self, key: str, default: Any = REQUIRED) -> bool:
        value = self._raw(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"is {_json_kind(value)}, expected true or false")
        return value

    # ---------------------------------------------------------------- lists
    def _list(self, key: str, default: Any, length: int | None, because: str | None) -> list[Any] | None:
        value = self._raw(key, default)
        if value is default and key not in self.data:
            return None
        if not isinstance(value, list):
            self.fail(key, f"is {_json_kind(value)}, expected a list")
        if length is not None and len(value) != length:
            self.fail(key, f"has {len(value)} values but {because or f'{length} are expected'}")
        return value

    def texts(
        self, key: str, default: Any = REQUIRED, *, length: int | None = None, because: str | None = None
    ) -> list[str]:
        values = self._list(key, default, length, because)
        if values is None:
            return default
        return [self._text(f"{self.name(key)}[{i}]", v) for i, v in enumerate(values)]

    def integers(
        self,
        key: str,
        default: Any = REQUIRED,
        *,
        length: int | None = None,
        because: str | None = None,
        low: int | None = None,
    ) -> list[int]:
        values = self._list(key, default, length, because)
        if values is None:
            return default
        return [self._integer(f"{self.name(key)}[{i}]", v, low, None) for i, v in enumerate(values)]

    def flags(self, key: str, default: Any = REQUIRED, *, length: int | None = None, because: str | None = None):
        values = self._list(key, default, length, because)
        if values is None:
            return default
        for i, v in enumerate(values):
            if not isinstance(v, bool):
                raise InputError(f"{self.name(key)}[{i}] is {_json_kind(v)}, expected true or false")
        return list(values)

    def numbers(
        self,
        key: str,
        *,
        length: int | None = None,
        because: str | None = None,
        dtype: Any = np.float32,
        default: Any = REQUIRED,
    ) -> np.ndarray:
        """A list of numbers as a 1-D array of ``dtype``; null -> NaN; any other non-finite
        value (also one beyond ``dtype``'s range) is refused."""
        values = self._list(key, default, length, because)
        if values is None:
            return default
        return self._array(self.name(key), values, dtype)

    def matrix(
        self,
        key: str,
        shape: tuple[int | None, int | None],
        *,
        because: str | None = None,
        dtype: Any = np.float32,
    ) -> np.ndarray:
        """Rows of numbers as a 2-D array of ``shape`` (None: any size, the same for every row)."""
        rows = self._list(key, REQUIRED, shape[0], because)
        assert rows is not None
        width = shape[1]
        out = []
        for i, row in enumerate(rows):
            name = f"{self.name(key)}[{i}]"
            if not isinstance(row, list):
                raise InputError(f"{name} is {_json_kind(row)}, expected a list of numbers")
            if width is None:
                width = len(row)
            if len(row) != width:
                raise InputError(f"{name} has {len(row)} values but {because or f'{width} are expected'}")
            out.append(self._array(name, row, dtype))
        if not out:
            return np.zeros((0, width or 0), dtype=dtype)
        return np.stack(out)

    def _array(self, name: str, values: list[Any], dtype: Any) -> np.ndarray:
        numbers = [self._number(f"{name}[{i}]", v) for i, v in enumerate(values)]
        with np.errstate(over="ignore"):
            array = np.asarray(numbers, dtype=dtype)
        bad = np.flatnonzero(np.isinf(array))  # NaN (null, or the NaN token of old files) marks a missing value
        if bad.size:
            i = int(bad[0])
            raise InputError(
                f"{name}[{i}] is {values[i]!r}: not a finite {np.dtype(dtype).name} number (null marks a missing one)"
            )
        return array

    def labelled_numbers(self, key: str) -> list[tuple[str, float]]:
        """A list of ``[label, number]`` pairs (null -> NaN); missing -> []."""
        values = self._list(key, [], None, None) or []
        out = []
        for i, pair in enumerate(values):
            name = f"{self.name(key)}[{i}]"
            if not isinstance(pair, list) or len(pair) != 2:
                raise InputError(f"{name} is {_json_kind(pair)}, expected a [label, number] pair")
            out.append((self._text(f"{name}[0]", pair[0]), self._number(f"{name}[1]", pair[1])))
        return out

    # -------------------------------------------------------------- objects
    def obj(self, key: str, default: Any = REQUIRED) -> Fields:
        value = self._raw(key, default)
        if value is default and key not in self.data:
            return value
        return Fields(value, self.name(key))

    def objects(self, key: str, default: Any = REQUIRED, *, nonempty: bool = False) -> list[Fields]:
        values = self._list(key, default, None, None)
        if values is None:
            return default
        if nonempty and not values:
            self.fail(key, "is empty: the result has nothing to show")
        return [Fields(v, f"{self.name(key)}[{i}]") for i, v in enumerate(values)]

    def mapping(self, key: str) -> dict[str, Any]:
        """A free-form object (``meta``); missing or null -> {}."""
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"is {_json_kind(value)}, expected an object")
        return dict(value)

    def number_map(self, key: str) -> dict[str, float]:
        """An object of numbers (``timings``); missing -> {}."""
        return {k: self._number(f"{self.name(key)}.{k}", v) for k, v in self.mapping(key).items()}


SCHEMA_PATTERN = re.compile(r"xai-tui/([a-z0-9-]+)/([0-9]{1,6})")


def schema_kind(schema: Any) -> tuple[str, int]:
    """``"xai-tui/attribution/1"`` -> ("attribution", 1); anything else a one-line InputError."""
    if not isinstance(schema, str):
        raise InputError(f"schema is {_json_kind(schema)}, expected a string like 'xai-tui/attribution/1'")
    found = SCHEMA_PATTERN.fullmatch(schema)
    if found is None:
        raise InputError(f"not an xai-tui result (schema {schema!r})")
    return found.group(1), int(found.group(2))


def read_json_file(path: str | os.PathLike[str]) -> Any:
    """The JSON value in the file at ``path``; a one-line InputError when it cannot be read or parsed."""
    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p} is not an xai-tui result: not UTF-8 text (byte {exc.start})") from None
    return parse_json(text, str(p))


def parse_json(text: str, what: str = "the text") -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{what} is not an xai-tui result: not JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:  # a number of too many digits, nesting too deep
        raise InputError(f"{what} is not an xai-tui result: {' '.join(str(exc).split())[:120]}") from None


class JsonResult:
    """Base of the result dataclasses: JSON with one NaN policy, atomic save, schema check."""

    SCHEMA: ClassVar[str]

    def _fields(self) -> dict[str, Any]:
        """The result's data as plain values (floats may be NaN; the base writes them as null)."""
        raise NotImplementedError

    @classmethod
    def _from_fields(cls: type[R], d: Fields) -> R:
        """The result from the data written by :meth:`_fields` (nulls where numbers were NaN),
        read and checked through ``d``'s accessors."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, **json_ready(self._fields())}

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        """The result from its JSON data, checked completely (schema, types, lengths, finite
        arrays): anything invalid is a one-line InputError naming the field."""
        fields = Fields(d)
        schema = d.get("schema", cls.SCHEMA)  # dicts built by hand may leave it out
        kind, version = schema_kind(schema)
        ours, our_version = schema_kind(cls.SCHEMA)
        if kind != ours:
            raise InputError(f"not a {cls.__name__} (schema {schema!r}, expected {cls.SCHEMA!r})")
        if version > our_version:
            raise InputError(
                f"written by a newer xai-tui (schema {schema!r}; this version reads {cls.SCHEMA!r}); "
                "update xai-tui to open it"
            )
        return cls._from_fields(fields)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls: type[R], text: str) -> R:
        return cls.from_dict(parse_json(text))

    def save(self, path: str | os.PathLike[str]) -> None:
        write_atomic(path, self.to_json(indent=1))

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        """The result in the file at ``path``; an invalid file is one line: ``PATH: what is wrong``."""
        data = read_json_file(path)
        try:
            return cls.from_dict(data)
        except InputError as exc:
            raise InputError(f"{Path(path).expanduser()}: {exc}") from None


__all__ = [
    "REQUIRED",
    "Fields",
    "JsonResult",
    "as_float",
    "check_output",
    "check_outputs",
    "float_array",
    "json_ready",
    "parse_json",
    "read_json_file",
    "run_meta",
    "schema_kind",
    "write_atomic",
]
