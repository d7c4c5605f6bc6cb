"""What a component responds to: the top contexts of every head, neuron or channel of one layer over a corpus.

An index holds, per component (unit) of one site kind x layer, the ``top_n`` windows of the corpus
where the unit scores highest, by two scores:

* ``activation``: the unit's activation, maximised over the window's positions. A neuron's (a
  channel's) activation is its value at the input of ``down_proj`` (the mixer's ``out_proj``); a
  head's is the L2 norm of its ``head_dim`` output at the input of ``o_proj``.
* ``relevance`` (relevance maximisation, Achtibat et al., "From attribution maps to
  human-understandable explanations through Concept Relevance Propagation", Nat. Mach. Intell. 2023):
  per window ``x_0 .. x_{T-1}`` the target is ``y = sum_t z_t[argmax z_t]``, the sum over every
  position ``t`` of the logit of the model's own next-token prediction there. One forward and one
  backward pass of ``y`` under the family's default LRP method (gradient x input form) give the
  relevance of the tapped tensor ``h``: ``R = h * dy/dh`` (the component taps,
  :func:`lrp_llm.mechanism.components.tapped`); a neuron's relevance at position ``t`` is ``R[t, n]``,
  a head's the sum of ``R[t, head slice]``. The window's score is the maximum over positions (the
  most positive relevance); because the rules are linear in the cotangent, ``R[t]`` is the sum of
  the relevances for each position's prediction.

For each score the window's entry is ``(value, position)``, the first position where the maximum
is reached. A unit's top entries are ordered by value (descending), then window id, then position
(ascending): a total order, so the top ``top_n`` do not depend on the order in which windows are
processed (resumed, or split across processes).

Storage (stdlib ``sqlite3``), one database per model fingerprint and corpus:

* ``meta(key, value)``: ``fingerprint``, ``corpus_hash``, ``window``, ``model``, ``format``;
* ``windows(id, source, ids, pieces)``: each window's token ids (int32 little-endian) and decoded
  token strings (JSON), so snippets are shown without the model or tokenizer;
* ``indexes(layer, kind, method, top_n, n_units)``: one row per built site kind x layer;
* ``done(layer, kind, window)``: the windows already processed (an interrupted build resumes);
* ``top(layer, kind, score, unit, rank, value, window, position)``: the top entries.

Windows: every passage (a line of a ``.txt`` file, or a paragraph: lines up to a blank line, see
:func:`read_passages`) is tokenized without special tokens; consecutive passages are packed into
windows of at most ``window`` tokens, a longer passage split into pieces of ``window`` tokens.

Sharding: :func:`build` with ``rank``/``world`` processes the windows ``id % world == rank`` into a
shard database of its own (:func:`shard_path`); :func:`merge_shards` merges shards into the store,
the same content as a single-process build. ``python -m lrp_llm.analyses.corpus_index build ...``
under ``torchrun`` does both (gloo on CPU, nccl on GPUs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lrp_llm.archs.sites import INDEXED_KINDS, Location, Site, SiteMap
from lrp_llm.errors import InputError, ShouldCancel, check_cancel
from lrp_llm.mechanism.gradients import Taps, method_rules, propagate

FORMAT = "1"
SCORES = ("activation", "relevance")
DEFAULT_WINDOW = 64
DEFAULT_TOP_N = 20
# commit the done windows and the changed top entries at least this often
COMMIT_EVERY_WINDOWS = 64
COMMIT_EVERY_SECONDS = 5.0
# a text file's first bytes with a NUL or that are not UTF-8 mark it as binary
_SNIFF_BYTES = 8192

Progress = Callable[[int, int], None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS windows (id INTEGER PRIMARY KEY, source TEXT NOT NULL, ids BLOB NOT NULL,
    pieces TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS indexes (layer INTEGER NOT NULL, kind TEXT NOT NULL, method TEXT NOT NULL,
    top_n INTEGER NOT NULL, n_units INTEGER NOT NULL, PRIMARY KEY (layer, kind));
CREATE TABLE IF NOT EXISTS done (layer INTEGER NOT NULL, kind TEXT NOT NULL, window INTEGER NOT NULL,
    PRIMARY KEY (layer, kind, window));
CREATE TABLE IF NOT EXISTS top (layer INTEGER NOT NULL, kind TEXT NOT NULL, score TEXT NOT NULL,
    unit INTEGER NOT NULL, rank INTEGER NOT NULL, value REAL NOT NULL, window INTEGER NOT NULL,
    position INTEGER NOT NULL, PRIMARY KEY (layer, kind, score, unit, rank));
"""


# -- corpus ------------------------------------------------------------------------------


def shipped_corpus() -> Path:
    """The corpus that ships with the package (``lrp_llm/data/corpus/corpus.txt``, written by ``make_corpus``)."""
    return Path(__file__).resolve().parent.parent / "data" / "corpus" / "corpus.txt"


def read_passages(paths: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """``(source, passage)`` for every passage of the text files: a file whose lines are separated by blank
    lines is read as paragraphs (lines up to a blank line, joined by spaces), otherwise one passage per line.
    ``source`` is ``"file:line"`` of the passage's first line. A missing, unreadable or binary file is a
    one-line error."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise InputError("no corpus: name at least one text file")
    out: list[tuple[str, str]] = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"corpus file {os.fsdecode(p)} does not exist or is not a file")
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read corpus file {os.fsdecode(p)}: {exc.strerror or exc}") from None
        if b"\0" in data[:_SNIFF_BYTES]:
            raise InputError(f"corpus file {os.fsdecode(p)} is binary, not text; give plain UTF-8 text files")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"corpus file {os.fsdecode(p)} is not UTF-8 text; give plain UTF-8 text files") from None
        lines = text.splitlines()
        paragraphs = any(not line.strip() for line in lines[:-1]) and any(line.strip() for line in lines)
        name = p.name
        if paragraphs:
            block: list[str] = []
            start = 0
            for i, line in enumerate([*lines, ""]):
                if line.strip():
                    if not block:
                        start = i + 1
                    block.append(line.strip())
                elif block:
                    out.append((f"{name}:{start}", " ".join(block)))
                    block = []
        else:
            out.extend((f"{name}:{i + 1}", line.strip()) for i, line in enumerate(lines) if line.strip())
    if not out:
        raise InputError("the corpus has no text: every file is empty")
    return out


@dataclass(frozen=True)
class Window:
    """One window of the corpus: token ids (at most the index's window size) and where it starts."""

    id: int
    source: str
    ids: tuple[int, ...]


def make_windows(tokenizer, passages: Sequence[tuple[str, str]], window: int = DEFAULT_WINDOW) -> list[Window]:
    """Pack the passages' tokens (no special tokens) into windows of at most ``window`` tokens: consecutive
    passages share a window while they fit; a longer passage is split into pieces of ``window`` tokens.
    Windows of one token (nothing to predict from) are left out."""
    window = int(window)
    if window < 2:
        raise InputError(f"the window must hold at least 2 tokens, not {window}")
    out: list[Window] = []
    current: list[int] = []
    source = ""

    def flush() -> None:
        nonlocal current
        if len(current) >= 2:
            out.append(Window(len(out), source, tuple(current)))
        current = []

    for src, text in passages:
        ids = [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
        if not ids:
            continue
        if len(current) + len(ids) > window:
            flush()
        if not current:
            source = src
        if len(ids) > window:
            for k in range(0, len(ids), window):
                current, source = ids[k : k + window], src
                flush()
            continue
        current.extend(ids)
    flush()
    if not out:
        raise InputError("the corpus has no window of at least 2 tokens")
    return out


def corpus_hash(windows: Sequence[Window], window: int) -> str:
    """sha256 of the window size and every window's token ids (what the statistics depend on)."""
    h = hashlib.sha256(f"window={int(window)};".encode())
    for w in windows:
        h.update(np.asarray(w.ids, dtype="<i4").tobytes())
        h.update(b"|")
    return h.hexdigest()


# -- model --------------------------------------------------------------------------------


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's configuration (without paths, versions and private keys) and of checksums of
    a few of its weights (first, middle and last parameters by name: shape, dtype, the first 4096 values).
    The same checkpoint in the same dtype gives the same fingerprint in every process and run."""
    cfg = model.config.to_dict()
    skip = {"transformers_version", "name_or_path", "_name_or_path", "_commit_hash", "torch_dtype", "dtype"}
    cfg = {k: v for k, v in cfg.items() if k not in skip and not k.startswith("_")}
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    named = sorted(model.named_parameters(), key=lambda kv: kv[0])
    picks = sorted({0, len(named) // 4, len(named) // 2, (3 * len(named)) // 4, len(named) - 1})
    for k in picks:
        name, p = named[k]
        values = p.detach().flatten()[:4096].to("cpu", torch.float64).numpy()
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
        h.update(values.astype("<f8").tobytes())
    return h.hexdigest()


def default_db_path(fingerprint: str, corpus: str) -> Path:
    """``$XAI_TUI_CACHE/index/<fingerprint 16>-<corpus 12>.sqlite`` (default ``~/.cache/xai-tui``)."""
    root = Path(os.environ.get("XAI_TUI_CACHE", Path.home() / ".cache" / "xai-tui"))
    return root / "index" / f"{fingerprint[:16]}-{corpus[:12]}.sqlite"


def _width(sites: SiteMap, kind: str) -> int:
    return sites.n_heads if kind == "head" else sites.count(kind)


def check_site_kind(sites: SiteMap, layer: int, kind: str) -> None:
    """One-line errors for a kind that is not indexable or a layer that lacks it."""
    if kind not in INDEXED_KINDS:
        raise InputError(f"cannot index '{kind}': choose one of {', '.join(INDEXED_KINDS)}")
    sites.check(Site(int(layer), kind, 0))


class _UnitTaps(Taps):
    """Taps on one layer's heads / neurons / channels; on the target's gradient, each unit's activation and
    relevance per position (``act``, ``rel``: (seq, units), float64 on the CPU)."""

    def __init__(self, sites: SiteMap, layer: int, kind: str) -> None:
        super().__init__()
        self.sites, self.layer, self.kind = sites, int(layer), kind
        self.act: np.ndarray | None = None
        self.rel: np.ndarray | None = None

    @contextmanager
    def installed(self, model: nn.Module) -> Iterator[_UnitTaps]:
        from lrp_llm.mechanism.components import tapped

        loc = self.sites.locate(Site(self.layer, self.kind, 0))
        places: dict[Hashable, Location] = {"units": Location(loc.module, loc.where)}
        with tapped(places, lambda key, view: self.add(view)):
            yield self

    def _per_unit(self, t: torch.Tensor, norm: bool) -> torch.Tensor:
        """(seq, width) -> (seq, units): heads summed (or L2 norm) over head_dim; neurons, channels as they are."""
        if self.kind != "head":
            return t
        s = self.sites
        per = t[..., : s.n_heads * s.head_dim].unflatten(-1, (s.n_heads, s.head_dim))
        return per.norm(dim=-1) if norm else per.sum(-1)

    def done(self, first: int, grads: Sequence[torch.Tensor | None], inputs: Sequence[torch.Tensor]) -> None:
        h = self.tensors[-1].detach()[0].to(torch.float64)  # (seq, width)
        g = grads[-1]  # (1, 1, seq, width): one target
        r = torch.zeros_like(h) if g is None else h * g[0, 0].to(torch.float64)
        self.act = self._per_unit(h, norm=True).cpu().numpy()
        self.rel = self._per_unit(r, norm=False).cpu().numpy()


def window_scores(
    model: nn.Module, ids: Sequence[int], layer: int, kind: str, *, method: str, sites: SiteMap | None = None
) -> dict[str, np.ndarray]:
    """Per unit of ``kind`` in ``layer``, for one window: ``activation`` and ``relevance`` (seq, units) float64
    as defined in the module docstring (the target: the sum of the logits of the model's own next-token
    predictions at every position; one forward pass under ``method``'s rules and one backward pass from ``y`` to
    the layer's tensor, through the blocks above it only: :func:`~lrp_llm.mechanism.gradients.propagate`)."""
    from lrp_llm.engines.generation import input_device

    sites = SiteMap(model) if sites is None else sites
    taps = _UnitTaps(sites, layer, kind)
    device = input_device(model)
    x = torch.tensor([list(ids)], device=device)

    with method_rules(model, method), taps.installed(model), torch.enable_grad():
        with torch.no_grad():
            embeds = model.get_input_embeddings()(x)
        # the input needs a gradient only so that the graph is built; the backward pass stops at the tap
        logits = model(inputs_embeds=embeds.requires_grad_(True), use_cache=False).logits[0]  # (seq, vocab)
        predicted = logits.detach().argmax(-1)
        y = logits.gather(-1, predicted[:, None]).sum().reshape(1)
        taps.check_unchanged()
        (h,) = taps.tensors
        (g,) = propagate(y, [h], torch.ones(1, 1, dtype=y.dtype, device=y.device))
        taps.done(0, [g], [embeds])
    assert taps.act is not None and taps.rel is not None
    for name, values in (("activation", taps.act), ("relevance", taps.rel)):
        if not np.isfinite(values).all():
            raise InputError(f"the {name} of {kind}s in layer {layer} is not finite for window of {len(ids)} tokens")
    return {"activation": taps.act, "relevance": taps.rel}


# -- top-N bookkeeping -------------------------------------------------------------------------


class _Top:
    """Per score, each unit's top entries (value desc, window asc, position asc) as arrays (units, top_n)."""

    def __init__(self, n_units: int, top_n: int) -> None:
        self.top_n = top_n
        self.value = {s: np.full((n_units, top_n), -np.inf) for s in SCORES}
        self.window = {s: np.full((n_units, top_n), np.iinfo(np.int64).max, dtype=np.int64) for s in SCORES}
        self.position = {s: np.zeros((n_units, top_n), dtype=np.int64) for s in SCORES}

    def merge(self, score: str, value: np.ndarray, window: np.ndarray, position: np.ndarray) -> np.ndarray:
        """Merge candidates (units, m); return the mask (units,) of units whose entries changed."""
        v = np.concatenate([self.value[score], value], axis=1)
        w = np.concatenate([self.window[score], window], axis=1)
        p = np.concatenate([self.position[score], position], axis=1)
        order = np.lexsort((p, w, -v), axis=-1)[:, : self.top_n]
        nv, nw, np_ = (np.take_along_axis(a, order, axis=1) for a in (v, w, p))
        changed = (nw != self.window[score]).any(1) | (np_ != self.position[score]).any(1)
        self.value[score], self.window[score], self.position[score] = nv, nw, np_
        return changed

    def add_window(self, window_id: int, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        changed = {}
        for s in SCORES:
            values = scores[s]  # (seq, units)
            pos = values.argmax(0)  # the first position of the maximum
            best = values[pos, np.arange(values.shape[1])]
            n = values.shape[1]
            changed[s] = self.merge(s, best[:, None], np.full((n, 1), window_id, dtype=np.int64), pos[:, None])
        return changed

    def rows(self, layer: int, kind: str, score: str, units: np.ndarray) -> Iterator[tuple]:
        for u in units:
            for r in range(self.top_n):
                if np.isfinite(self.value[score][u, r]):
                    yield (
                        layer,
                        kind,
                        score,
                        int(u),
                        r,
                        float(self.value[score][u, r]),
                        int(self.window[score][u, r]),
                        int(self.position[score][u, r]),
                    )


# -- the store -------------------------------------------------------------------------------


def connect(path: str | os.PathLike, *, create: bool = False) -> sqlite3.Connection:
    """Open an index database (``create``: make it and its folder if missing); not a database is one line."""
    p = Path(path)
    if not create and not p.is_file():
        raise InputError(f"no index at {os.fsdecode(p)}; build one with `xai-tui components index`")
    if create:
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = sqlite3.connect(os.fspath(p), timeout=60)
        con.executescript(_SCHEMA) if create else con.execute("SELECT count(*) FROM meta").fetchone()
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{os.fsdecode(p)} is not an index database ({exc})") from None
    return con


def _meta(con: sqlite3.Connection) -> dict[str, str]:
    return dict(con.execute("SELECT key, value FROM meta").fetchall())


def _prepare(con: sqlite3.Connection, meta: dict[str, str], windows: Sequence[Window], pieces) -> None:
    """Write meta and windows into an empty store; check they match in a used one."""
    have = _meta(con)
    if have:
        for key in ("fingerprint", "corpus_hash", "window"):
            if have.get(key) != meta[key]:
                raise InputError(
                    f"the index database was built for another {key.replace('_', ' ')} "
                    f"({have.get(key, '?')[:16]} != {meta[key][:16]}); choose another database path"
                )
        return
    with con:
        con.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
        con.executemany(
            "INSERT INTO windows VALUES (?, ?, ?, ?)",
            ((w.id, w.source, np.asarray(w.ids, dtype="<i4").tobytes(), json.dumps(pieces(w.ids))) for w in windows),
        )


def _ensure_index(con: sqlite3.Connection, layer: int, kind: str, method: str, top_n: int, n_units: int) -> None:
    row = con.execute("SELECT method, top_n, n_units FROM indexes WHERE layer=? AND kind=?", (layer, kind)).fetchone()
    if row is None:
        with con:
            con.execute("INSERT INTO indexes VALUES (?, ?, ?, ?, ?)", (layer, kind, method, top_n, n_units))
    elif tuple(row) != (method, top_n, n_units):
        raise InputError(
            f"the {kind}s of layer {layer} are indexed with method {row[0]}, top {row[1]}; "
            f"not {method}, top {top_n}: use the same settings or another database path"
        )


def _load_top(con: sqlite3.Connection, layer: int, kind: str, n_units: int, top_n: int) -> _Top:
    top = _Top(n_units, top_n)
    rows = con.execute(
        "SELECT score, unit, rank, value, window, position FROM top WHERE layer=? AND kind=?", (layer, kind)
    )
    for score, unit, rank, value, window, position in rows:
        top.value[score][unit, rank] = value
        top.window[score][unit, rank] = window
        top.position[score][unit, rank] = position
    return top


def _write(con, top: _Top, layer: int, kind: str, changed: dict[str, np.ndarray], done: Sequence[int]) -> None:
    """One transaction: the changed units' top entries and the done windows."""
    with con:
        for s in SCORES:
            units = np.flatnonzero(changed[s])
            con.executemany(
                "DELETE FROM top WHERE layer=? AND kind=? AND score=? AND unit=?",
                ((layer, kind, s, int(u)) for u in units),
            )
            con.executemany("INSERT INTO top VALUES (?, ?, ?, ?, ?, ?, ?, ?)", top.rows(layer, kind, s, units))
        con.executemany("INSERT OR IGNORE INTO done VALUES (?, ?, ?)", ((layer, kind, int(w)) for w in done))


def shard_path(db: str | os.PathLike, rank: int, world: int) -> Path:
    """Where rank ``rank`` of ``world`` writes its shard of ``db``."""
    p = Path(db)
    return p.with_name(f"{p.name}.shard{int(rank)}-of{int(world)}")


@dataclass
class BuildResult:
    """What a build did: ``db`` the store it wrote, ``windows`` in the corpus, ``done`` processed now,
    ``skipped`` already done before (resumed), ``tokens`` processed now, ``seconds`` of wall time."""

    db: Path
    windows: int
    done: int
    skipped: int
    tokens: int
    seconds: float


def build(
    model: nn.Module,
    tokenizer,
    corpus: Sequence[str | os.PathLike] | None,
    layer: int,
    kind: str,
    *,
    db: str | os.PathLike | None = None,
    method: str | None = None,
    top_n: int = DEFAULT_TOP_N,
    window: int = DEFAULT_WINDOW,
    limit: int | None = None,
    rank: int = 0,
    world: int = 1,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> BuildResult:
    """Index the top contexts of every ``kind`` unit ("neuron", "head", "channel") of ``layer`` over ``corpus``
    (text files; None: the shipped corpus). ``db``: the SQLite store (default :func:`default_db_path`);
    ``method``: a gradient x input method (default: the family's LRP rule set; grad-x-input: plain gradients); ``limit``: process only the first ``limit`` windows (the store still holds the whole corpus; a later build
    without a limit completes it).

    Resumes: windows recorded as done are skipped; results are committed every
    ``COMMIT_EVERY_WINDOWS`` windows or ``COMMIT_EVERY_SECONDS``, and on cancel
    (``should_cancel`` -> :class:`~lrp_llm.errors.Cancelled`, after committing). ``progress(done, total)``
    counts this rank's windows. With ``world > 1`` this rank takes the windows ``id % world == rank`` and
    writes :func:`shard_path` (merge with :func:`merge_shards`).
    """
    from lrp_llm.methods import check_offered, default_method, get_method

    t0 = time.perf_counter()
    sites = SiteMap(model)
    layer, top_n = int(layer), int(top_n)
    check_site_kind(sites, layer, kind)
    if top_n < 1:
        raise InputError(f"top_n must be at least 1, not {top_n}")
    if not 0 <= int(rank) < int(world):
        raise InputError(f"rank {rank} is not one of 0..{int(world) - 1}")
    method = default_method(model) if method is None else method
    check_offered(model, method)
    if get_method(method).computation != "gradient-x-input":
        raise InputError(
            f"the corpus index needs a gradient x input method (e.g. {default_method(model)}), not '{method}'"
        )
    windows = make_windows(tokenizer, read_passages(corpus or [shipped_corpus()]), window)
    fp = model_fingerprint(model)
    meta = {
        "format": FORMAT,
        "fingerprint": fp,
        "corpus_hash": corpus_hash(windows, window),
        "window": str(int(window)),
        "model": str(getattr(model.config, "_name_or_path", "") or type(model).__name__),
    }
    store = Path(db) if db is not None else default_db_path(fp, meta["corpus_hash"])
    path = store if world == 1 else shard_path(store, rank, world)
    n_units = _width(sites, kind)

    def pieces(ids: Sequence[int]) -> list[str]:
        return [tokenizer.decode([i]) for i in ids]

    # --limit processes the first windows only; the store holds the whole corpus, so a later build extends it
    count = len(windows) if limit is None else max(1, int(limit))
    mine = [w for w in windows[:count] if w.id % int(world) == int(rank)]
    with closing(connect(path, create=True)) as con:
        _prepare(con, meta, windows, pieces)
        _ensure_index(con, layer, kind, method, top_n, n_units)
        already = {r[0] for r in con.execute("SELECT window FROM done WHERE layer=? AND kind=?", (layer, kind))}
        todo = [w for w in mine if w.id not in already]
        top = _load_top(con, layer, kind, n_units, top_n)
        changed = {s: np.zeros(n_units, dtype=bool) for s in SCORES}
        pending: list[int] = []
        tokens = 0
        last = time.perf_counter()
        done_count = len(mine) - len(todo)
        if progress is not None:
            progress(done_count, len(mine))
        try:
            for w in todo:
                check_cancel(should_cancel)
                scores = window_scores(model, w.ids, layer, kind, method=method, sites=sites)
                for s, mask in top.add_window(w.id, scores).items():
                    changed[s] |= mask
                pending.append(w.id)
                tokens += len(w.ids)
                done_count += 1
                if len(pending) >= COMMIT_EVERY_WINDOWS or time.perf_counter() - last > COMMIT_EVERY_SECONDS:
                    _write(con, top, layer, kind, changed, pending)
                    changed = {s: np.zeros(n_units, dtype=bool) for s in SCORES}
                    pending, last = [], time.perf_counter()
                if progress is not None:
                    progress(done_count, len(mine))
        finally:
            if pending:  # also on cancel or error: what is done stays done
                _write(con, top, layer, kind, changed, pending)
    return BuildResult(path, len(windows), len(todo), len(mine) - len(todo), tokens, time.perf_counter() - t0)


def merge_shards(db: str | os.PathLike, shards: Sequence[str | os.PathLike]) -> Path:
    """Merge shard databases (same model fingerprint, corpus and settings) into ``db``: the windows and meta
    of the first, the union of the done windows, and per unit the top entries of all under the total order
    of the module docstring. Merging the shards of a complete build gives the single-process store."""
    if not shards:
        raise InputError("no shards to merge")
    cons = [connect(s) for s in shards]
    try:
        metas = [_meta(c) for c in cons]
        for s, m in zip(shards, metas[1:]):
            if m != metas[0]:
                raise InputError(f"shard {os.fsdecode(s)} was built for another model, corpus or window size")
        with closing(connect(db, create=True)) as out:
            first = cons[0]
            if not _meta(out):
                with out:
                    out.executemany("INSERT INTO meta VALUES (?, ?)", sorted(metas[0].items()))
                    out.executemany(
                        "INSERT INTO windows VALUES (?, ?, ?, ?)",
                        first.execute("SELECT id, source, ids, pieces FROM windows ORDER BY id"),
                    )
            else:
                _prepare(out, metas[0], [], None)
            indexes = sorted({tuple(r) for c in cons for r in c.execute("SELECT * FROM indexes").fetchall()})
            for layer, kind, method, top_n, n_units in indexes:
                _ensure_index(out, layer, kind, method, top_n, n_units)
                top = _load_top(out, layer, kind, n_units, top_n)
                done: set[int] = set()
                for c in cons:
                    part = _load_top(c, layer, kind, n_units, top_n)
                    for s in SCORES:
                        top.merge(s, part.value[s], part.window[s], part.position[s])
                    done |= {r[0] for r in c.execute("SELECT window FROM done WHERE layer=? AND kind=?", (layer, kind))}
                every = {s: np.ones(n_units, dtype=bool) for s in SCORES}
                _write(out, top, layer, kind, every, sorted(done))
    finally:
        for c in cons:
            c.close()
    return Path(db)


# -- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snippet:
    """One top context of a unit: ``before`` / ``token`` / ``after`` the tokens around the firing position
    (``token`` the firing one, at ``position`` of window ``window`` from ``source``), ``value`` the score."""

    rank: int
    value: float
    window: int
    position: int
    source: str
    before: tuple[str, ...]
    token: str
    after: tuple[str, ...]

    def text(self, mark: tuple[str, str] = ("[[", "]]")) -> str:
        """The snippet as one string with the firing token between the ``mark`` strings (raw data: make it
        visible with :func:`lrp_llm.text.visible` before printing it to a terminal)."""
        return "".join(self.before) + mark[0] + self.token + mark[1] + "".join(self.after)

    def to_dict(self) -> dict[str, object]:
        return {
            "rank": self.rank,
            "value": self.value,
            "window": self.window,
            "position": self.position,
            "source": self.source,
            "before": list(self.before),
            "token": self.token,
            "after": list(self.after),
        }


def indexed(db: str | os.PathLike) -> list[dict[str, object]]:
    """The site kinds x layers a store holds: ``layer``, ``kind``, ``method``, ``top_n``, ``n_units``, ``done``
    (windows processed) and ``windows`` (in the corpus)."""
    with closing(connect(db)) as con:
        total = con.execute("SELECT count(*) FROM windows").fetchone()[0]
        out = []
        for layer, kind, method, top_n, n_units in con.execute("SELECT * FROM indexes ORDER BY layer, kind"):
            done = con.execute("SELECT count(*) FROM done WHERE layer=? AND kind=?", (layer, kind)).fetchone()[0]
            out.append(
                {"layer": layer, "kind": kind, "method": method, "top_n": top_n, "n_units": n_units}
                | {"done": done, "windows": total}
            )
        return out


def top_contexts(
    db: str | os.PathLike, site_name: str, by: str = "relevance", k: int = 10, *, context: int = 8
) -> list[Snippet]:
    """The ``k`` top contexts of one unit (``layer.3.mlp.neuron.17``, ``layer.2.attn.head.1``,
    ``layer.0.mixer.channel.5``) by ``by`` ("relevance" or "activation"), best first, each with ``context``
    tokens either side of the firing token. Reads the store only (no model). An unknown or unindexed site is
    a one-line error."""
    if by not in SCORES:
        raise InputError(f"--by must be one of {', '.join(SCORES)}, not '{by}'")
    site = Site.parse(site_name)
    if site.kind not in INDEXED_KINDS:
        raise InputError(f"'{site.name}' is not a head, neuron or channel; only those are indexed")
    with closing(connect(db)) as con:
        row = con.execute("SELECT n_units FROM indexes WHERE layer=? AND kind=?", (site.layer, site.kind)).fetchone()
        if row is None:
            have = ", ".join(f"layer {r[0]} {r[1]}s" for r in con.execute("SELECT layer, kind FROM indexes")) or "none"
            raise InputError(
                f"the {site.kind}s of layer {site.layer} are not indexed in this database (it has: {have})"
            )
        if not 0 <= int(site.index) < int(row[0]):
            raise InputError(f"'{site.name}': {site.kind} {site.index} is out of range 0..{int(row[0]) - 1}")
        rows = con.execute(
            "SELECT t.rank, t.value, t.window, t.position, w.source, w.pieces FROM top t JOIN windows w "
            "ON w.id = t.window WHERE t.layer=? AND t.kind=? AND t.score=? AND t.unit=? ORDER BY t.rank LIMIT ?",
            (site.layer, site.kind, by, int(site.index), max(0, int(k))),
        ).fetchall()
    out = []
    for rank, value, window, position, source, pieces_json in rows:
        pieces = json.loads(pieces_json)
        lo = max(0, position - int(context))
        out.append(
            Snippet(
                rank=rank,
                value=value,
                window=window,
                position=position,
                source=source,
                before=tuple(pieces[lo:position]),
                token=pieces[position],
                after=tuple(pieces[position + 1 : position + 1 + int(context)]),
            )
        )
    return out


# -- torchrun entry point ----------------------------------------------------------------------


def _distributed_main(argv: Sequence[str] | None = None) -> int:
    """``torchrun --nproc-per-node N -m lrp_llm.analyses.corpus_index build --model PATH --layer L --kind K
    --db FILE [--corpus FILE ...]``: every rank writes its shard; rank 0 merges them into ``--db`` after a
    barrier (gloo on CPU, nccl on GPUs) and removes the shards."""
    p = argparse.ArgumentParser(prog="python -m lrp_llm.analyses.corpus_index")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--model", help="a checkpoint as `xai-tui --model` takes it (default: the bundled model)")
    b.add_argument("--corpus", nargs="*")
    b.add_argument("--layer", type=int, required=True)
    b.add_argument("--kind", required=True, choices=INDEXED_KINDS)
    b.add_argument("--db", required=True)
    b.add_argument("--method")
    b.add_argument("--top-n", type=int, default=DEFAULT_TOP_N)
    b.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    b.add_argument("--limit", type=int)
    b.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default: the checkpoint's")
    args = p.parse_args(argv)
    from lrp_llm.analyses.distributed import process_group
    from lrp_llm.checkpoints.loading import load_model

    with process_group() as group:
        rank, world = group.rank, group.world
        cuda = torch.cuda.is_available()
        model, tokenizer = load_model(args.model, device="cuda" if cuda else "cpu", dtype=args.dtype)
        result = build(
            model,
            tokenizer,
            args.corpus,
            args.layer,
            args.kind,
            db=args.db,
            method=args.method,
            top_n=args.top_n,
            window=args.window,
            limit=args.limit,
            rank=rank,
            world=world,
        )
        if world > 1:
            group.barrier()
            if rank == 0:
                shards = [shard_path(args.db, r, world) for r in range(world)]
                merge_shards(args.db, shards)
                for s in shards:
                    s.unlink()
            group.barrier()
        if rank == 0:
            print(f"indexed {result.windows} windows into {args.db}")
    return 0


if __name__ == "__main__":
    sys.exit(_distributed_main())


__all__ = [
    "BuildResult",
    "SCORES",
    "Snippet",
    "Window",
    "build",
    "corpus_hash",
    "default_db_path",
    "indexed",
    "make_windows",
    "merge_shards",
    "model_fingerprint",
    "read_passages",
    "shard_path",
    "shipped_corpus",
    "top_contexts",
    "window_scores",
]
