"""Checks that a checkpoint's weights and config describe the same model, before and after loading.

Before: the model the config describes must fit in the free memory (a config with absurd
sizes is refused in a fraction of a second instead of after a long allocation attempt).
After: every tensor of the model must come from the checkpoint; missing, unexpected or
mismatched tensors would otherwise leave randomly initialised weights behind and give a
different answer on every run. Both for every layout (HF folders, GGUF, mamba-ssm).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lrp_llm.errors import CheckpointError, CheckpointWarning

ALLOW_FLAG = "--allow-missing-weights"
_SHOWN = 3  # names listed per kind of problem; the rest are counted


def _names(kind: str, names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    more = f", ... ({len(names)} in all)" if len(names) > _SHOWN else ""
    return f"{kind} {shown}{more}"


def _shape(shape: Any) -> str:
    return "x".join(str(int(d)) for d in shape)


def weight_problems(
    missing: Iterable[str] = (), unexpected: Iterable[str] = (), mismatched: Iterable[tuple] = ()
) -> str:
    """One phrase naming a few of each kind of bad tensor with their count ("" when all is well).

    ``mismatched``: ``(name, checkpoint_shape, model_shape)`` as transformers reports them."""
    missing, unexpected = sorted(missing), sorted(unexpected)
    mismatched = sorted(mismatched, key=lambda m: m[0])
    parts = []
    if missing:
        parts.append(_names("missing", missing))
    if unexpected:
        parts.append(_names("unexpected", unexpected))
    if mismatched:
        shapes = [f"{m[0]} (checkpoint {_shape(m[1])}, config {_shape(m[2])})" for m in mismatched]
        parts.append(_names("wrong shape", shapes))
    return "; ".join(parts)


def check_loaded_weights(
    where: str | os.PathLike[str],
    *,
    missing: Iterable[str] = (),
    unexpected: Iterable[str] = (),
    mismatched: Iterable[tuple] = (),
    allow_missing: bool = False,
) -> None:
    """Raise a one-line :class:`CheckpointError` naming the tensors that did not load as saved;
    with ``allow_missing`` warn (:class:`CheckpointWarning`) instead. Tied weights (an
    lm_head shared with the embeddings) are not missing: the caller leaves them out."""
    problems = weight_problems(missing, unexpected, mismatched)
    if not problems:
        return
    text = f"the weights in {where} do not match its config ({problems})"
    if not allow_missing:
        raise CheckpointError(
            f"{text}; use the complete checkpoint, or pass {ALLOW_FLAG} to run with those tensors randomly initialised"
        )
    warnings.warn(
        f"{text}; running with those tensors randomly initialised ({ALLOW_FLAG}), so results are not the checkpoint's",
        CheckpointWarning,
        stacklevel=3,
    )


# ----------------------------------------------------------------- size before loading
def _format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover - the loop returns


def available_memory(device: str) -> int | None:
    """Bytes free for new tensors on ``device`` ("cpu" or "cuda"); None when unknown."""
    if device == "cuda":
        import torch

        try:
            return int(torch.cuda.mem_get_info()[0])
        except Exception:  # noqa: BLE001 - no answer is "unknown", not an error
            return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def model_bytes(build, dtype=None) -> tuple[int, int] | None:
    """``(parameters, bytes)`` of the model ``build()`` makes, built on the meta device (no memory
    is allocated, so even a config with absurd sizes is measured at once); None if it cannot be
    built there. ``dtype``: the dtype the weights will have (default: as ``build`` makes them)."""
    import torch

    try:
        with torch.device("meta"):
            model = build()
    except Exception:  # noqa: BLE001 - some models compute values at init; then only the real load can tell
        return None
    target_size = torch.empty((), dtype=dtype).element_size() if dtype is not None else None
    count, size = 0, 0
    for t in [*model.parameters(), *model.buffers()]:
        count += t.numel()
        float_size = target_size if target_size is not None and t.is_floating_point() else t.element_size()
        size += t.numel() * float_size
    return count, size


def check_fits_in_memory(where: str | os.PathLike[str], build, *, dtype=None, device: str = "cpu") -> None:
    """Refuse, before allocating anything, a model whose weights would not fit in the free memory."""
    measured = model_bytes(build, dtype)
    free = available_memory(device)
    if measured is None or free is None:
        return
    count, size = measured
    if size > free:
        raise CheckpointError(
            f"the config of {where} describes a model of {count / 1e9:.3g} billion parameters "
            f"({_format_bytes(size)}) but only {_format_bytes(free)} of memory is free; check config.json "
            "(hidden_size, num_hidden_layers, vocab_size ...), pass a smaller --dtype, or --device-map auto"
        )
