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
import sys
import tempfile
from collections.abc import Iterable
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


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        # mkstemp makes the file private (0600); give it the permissions open() would (0666 - umask),
        # so a report meant for sharing is readable like any other file the user writes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
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


__all__ = ["JsonResult", "as_float", "float_array", "json_ready", "run_meta", "write_atomic"]
