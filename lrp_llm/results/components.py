"""Component relevance of one explained token: which layers, heads and neurons carried it.

Plain data, readable without the model (JSON through the owning
:class:`~lrp_llm.results.attribution.TargetRelevance`). Component names are the site names of
:mod:`lrp_llm.archs.sites` (``layer.3.attn.head.2``, ``layer.5.mlp.neuron.17``). The relevance
of a tensor ``h`` for the token is ``sum(h * dlogit/dh)`` under the method's rules
(gradient x input form); :mod:`lrp_llm.mechanism.components` computes it, ``docs/design.md``
says what is conserved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from lrp_llm.errors import InputError
from lrp_llm.results.base import Fields, float_array

# the kinds top_components ranks; "part" ranks attention, MLP and mixer outputs together; "ssm-head": Mamba-2's
# channels summed per SSM head (named ``layer.{i}.mixer.ssm_head.{h}``, not a site: see ssm_head_channels)
RANKED_KINDS = ("attn", "mlp", "mixer", "part", "head", "neuron", "channel", "ssm-head", "expert")
SSM_HEAD = re.compile(r"^layer\.(\d+)\.mixer\.ssm_head\.(\d+)$")


def ssm_head_channels(name: str, n_channels: int, n_heads: int) -> list[str]:
    """The channel sites of the SSM head ``name`` (``layer.{i}.mixer.ssm_head.{h}``) of a Mamba-2 mixer with
    ``n_channels`` channels in ``n_heads`` heads side by side (head ``h``: channels ``h * w .. (h + 1) * w - 1``,
    ``w = n_channels // n_heads``); any other name: ``[name]``. An out-of-range head is a one-line error."""
    m = SSM_HEAD.match(name)
    if m is None:
        return [name]
    layer, head = int(m.group(1)), int(m.group(2))
    if n_heads < 1 or n_channels % n_heads:
        raise InputError(f"'{name}': {n_channels} channels do not split into {n_heads} SSM heads")
    if not 0 <= head < n_heads:
        raise InputError(f"'{name}': SSM head {head} is out of range 0..{n_heads - 1}")
    w = n_channels // n_heads
    return [f"layer.{layer}.mixer.channel.{c}" for c in range(head * w, (head + 1) * w)]


class RankedComponent(NamedTuple):
    """One component and its (signed) relevance for the token."""

    site: str
    relevance: float


def _totals(values: Any, n: int, dtype: Any) -> list[float | None]:
    out = [None if v is None else float(v) for v in values]
    if len(out) != n:
        raise ValueError(f"{len(out)} per-layer totals for {n} layers")
    return [None if v is None else float(np.asarray(v, dtype=dtype)) for v in out]


@dataclass
class ComponentRelevance:
    """Relevance of the model's components for one explained token (at ``position``).

    - ``trace`` (n_layers + 1, position): row 0 the embedding output (= the input relevance),
      row ``i + 1`` the output of block ``i`` (the residual stream), summed over the hidden axis.
    - ``attn``, ``mlp``, ``mixer``: per layer the relevance of that part's output (summed over
      positions and hidden axis); None where the block has no such part (a family without it:
      all None).
    - ``heads`` (n_layers, n_heads): per head the relevance at the input of the attention's
      output projection (its ``head_dim`` slice, summed over positions); NaN rows for blocks
      without attention; None when the family has no heads. ``head_positions``
      (n_layers, n_heads, position): per head and position, on request.
    - ``neuron_total``: per layer the relevance at the input of the MLP's down projection
      (all neurons); ``neuron_index`` / ``neuron_value`` (n_layers, k): the k neurons of
      largest |relevance| per layer, signed, ordered by |relevance| (index -1 and NaN where a
      block has no MLP); ``neurons`` (n_layers, d_mlp): every neuron, on request.
    - Mamba mixers: ``channel_total``, ``channel_index`` / ``channel_value``, ``channels``: the
      same for the channels at the input of the mixer's ``out_proj`` (d_inner); ``ssm_heads``
      (n_layers, n_ssm_heads): Mamba-2's channels summed per SSM head (head ``h``: channels
      ``h * head_dim`` .. ``(h + 1) * head_dim - 1``; select them as those channel sites).
    - Mixture-of-experts blocks: ``experts`` (n_layers, n_experts): per routed expert the
      relevance of its weighted contribution (routing weight x expert output, summed over the
      tokens routed to it and the hidden axis), NaN rows for blocks without experts;
      ``shared_expert``: per layer the relevance of the shared expert's contribution (None
      where a block has none). Together they partition the MoE block's output (``mlp``).

    Values are float64 for float64 models, float32 otherwise (``dtype``).
    """

    trace: np.ndarray
    attn: list[float | None]
    mlp: list[float | None]
    mixer: list[float | None]
    heads: np.ndarray | None = None
    neuron_total: list[float | None] | None = None
    neuron_index: np.ndarray | None = None
    neuron_value: np.ndarray | None = None
    head_positions: np.ndarray | None = None
    neurons: np.ndarray | None = None
    channel_total: list[float | None] | None = None
    channel_index: np.ndarray | None = None
    channel_value: np.ndarray | None = None
    channels: np.ndarray | None = None
    ssm_heads: np.ndarray | None = None
    experts: np.ndarray | None = None
    shared_expert: list[float | None] | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, not {self.dtype!r}")
        dt = np.dtype(self.dtype)
        self.trace = np.asarray(self.trace, dtype=dt)
        n = self.trace.shape[0] - 1
        self.attn, self.mlp, self.mixer = (_totals(v, n, dt) for v in (self.attn, self.mlp, self.mixer))
        for name in _TOTALS:
            if getattr(self, name) is not None:
                setattr(self, name, _totals(getattr(self, name), n, dt))
        for name in _ARRAYS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(value, dtype=np.int64 if name.endswith("_index") else dt))

    @property
    def n_layers(self) -> int:
        return self.trace.shape[0] - 1

    def moe_total(self, layer: int) -> float | None:
        """The relevance of block ``layer``'s MoE part: its "mlp" total where the block has that site, else (the
        block adds its experts' and shared expert's outputs itself: Granite-4 hybrid, Llama-4) the sum of its
        experts and its shared expert, which partition it; None without experts."""
        if self.mlp[layer] is not None:
            return float(self.mlp[layer])
        if self.experts is None or not np.isfinite(self.experts[layer]).any():
            return None
        shared = None if self.shared_expert is None else self.shared_expert[layer]
        return float(np.nansum(self.experts[layer])) + (shared or 0.0)

    @property
    def layer_totals(self) -> np.ndarray:
        """(n_layers + 1,): the trace summed over positions (embedding, then each block output)."""
        return self.trace.astype(np.float64).sum(-1)

    def top_components(self, kind: str, k: int = 10) -> list[RankedComponent]:
        """The ``k`` components of ``kind`` (one of :data:`RANKED_KINDS`) with the largest |relevance|,
        across layers, largest first (ties: lower layer, then lower index first). Neurons are
        ranked among the stored top-k per layer (all of them when ``neurons`` is stored); channels alike."""
        if kind not in RANKED_KINDS:
            raise InputError(f"unknown component kind '{kind}'; choose one of: {', '.join(RANKED_KINDS)}")
        found: list[RankedComponent] = []
        parts = ("attn", "mlp", "mixer") if kind == "part" else (kind,) if kind in ("attn", "mlp", "mixer") else ()
        for part in parts:
            for i, v in enumerate(getattr(self, part)):
                if v is not None:
                    found.append(RankedComponent(f"layer.{i}.{part}", v))
        if kind == "head" and self.heads is not None:
            for i, row in enumerate(self.heads):
                found.extend(RankedComponent(f"layer.{i}.attn.head.{h}", float(v)) for h, v in enumerate(row) if v == v)
        if kind == "ssm-head" and self.ssm_heads is not None:
            for i, row in enumerate(self.ssm_heads):
                found.extend(
                    RankedComponent(f"layer.{i}.mixer.ssm_head.{h}", float(v)) for h, v in enumerate(row) if v == v
                )
        if kind == "expert":  # routed and shared experts together
            for i in range(self.n_layers):
                if self.experts is not None:
                    found.extend(
                        RankedComponent(f"layer.{i}.mlp.expert.{e}", float(v))
                        for e, v in enumerate(self.experts[i])
                        if v == v
                    )
                if self.shared_expert is not None and self.shared_expert[i] is not None:
                    found.append(RankedComponent(f"layer.{i}.mlp.shared_expert", float(self.shared_expert[i])))
        if kind in ("neuron", "channel"):
            part = "mlp.neuron" if kind == "neuron" else "mixer.channel"
            every, index, value, total = (getattr(self, f"{kind}s"), *(getattr(self, f"{kind}_{x}") for x in _INDEXED))
            if every is not None:
                for i, row in enumerate(every):
                    if total is None or total[i] is not None:
                        found.extend(RankedComponent(f"layer.{i}.{part}.{n}", float(v)) for n, v in enumerate(row))
            elif index is not None and value is not None:
                for i, (idx, val) in enumerate(zip(index, value)):
                    found.extend(
                        RankedComponent(f"layer.{i}.{part}.{int(n)}", float(v)) for n, v in zip(idx, val) if n >= 0
                    )
        order = sorted(range(len(found)), key=lambda j: -abs(found[j].relevance))  # stable: site order breaks ties
        return [found[j] for j in order[: max(0, int(k))]]

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "dtype": self.dtype,
            "trace": self.trace.tolist(),
            "attn": list(self.attn),
            "mlp": list(self.mlp),
            "mixer": list(self.mixer),
        }
        for name in _ARRAYS:
            value = getattr(self, name)
            if value is not None:
                d[name] = value.tolist()
        for name in _TOTALS:
            if getattr(self, name) is not None:
                d[name] = list(getattr(self, name))
        return d

    @classmethod
    def from_dict(cls, d: Fields | dict[str, Any], position: int | None = None) -> ComponentRelevance:
        """Read back :meth:`to_dict`; ``position`` (the token's) checks the trace's width."""
        f = Fields.of(d)
        dtype = f.text("dtype", "float32", choices=("float32", "float64"))
        dt = np.dtype(dtype)
        trace = f.matrix("trace", (None, position), because=f"the token is at position {position}", dtype=dt)
        if trace.shape[0] < 2:
            f.fail("trace", "has fewer than 2 rows (the embedding and at least one block)")
        n = trace.shape[0] - 1

        def totals(key: str, required: bool = True) -> list[float | None] | None:
            if not f.has(key):
                if required:
                    f.fail(key, "is missing")
                return None
            values = f._list(key, None, n, f"the trace has {n} layers") or []
            return [None if v is None else f._number(f"{f.name(key)}[{i}]", v) for i, v in enumerate(values)]

        def array(key: str, ndim: int, dtype: Any) -> np.ndarray | None:
            if not f.has(key):
                return None
            out = float_array(f.data[key], dtype)
            if out.ndim != ndim or out.shape[0] != n:
                f.fail(key, f"has shape {out.shape}, expected {ndim} dimensions with {n} layers first")
            return out

        indexed = {}
        for kind in ("neuron", "channel"):
            index = array(f"{kind}_index", 2, np.float64)
            value = array(f"{kind}_value", 2, dt)
            if (index is None) != (value is None) or (index is not None and index.shape != value.shape):
                f.fail(f"{kind}_index", f"and {kind}_value must both be given, with the same shape")
            if index is not None and (np.isnan(index).any() or (index != np.round(index)).any() or (index < -1).any()):
                f.fail(f"{kind}_index", "must hold whole numbers >= -1")
            indexed[f"{kind}_index"] = None if index is None else index.astype(np.int64)
            indexed[f"{kind}_value"] = value
            indexed[f"{kind}_total"] = totals(f"{kind}_total", required=False)
            indexed[f"{kind}s"] = array(f"{kind}s", 2, dt)
        return cls(
            trace=trace,
            attn=totals("attn"),
            mlp=totals("mlp"),
            mixer=totals("mixer"),
            heads=array("heads", 2, dt),
            head_positions=array("head_positions", 3, dt),
            ssm_heads=array("ssm_heads", 2, dt),
            experts=array("experts", 2, dt),
            shared_expert=totals("shared_expert", required=False),
            dtype=dtype,
            **indexed,
        )


# the optional array fields (JSON: nested lists), and the names of the top-k fields of neurons / channels
_ARRAYS = (
    "heads",
    "head_positions",
    "neuron_index",
    "neuron_value",
    "neurons",
    "channel_index",
    "channel_value",
    "channels",
    "ssm_heads",
    "experts",
)
# the optional per-layer totals (JSON: lists with null for absent layers)
_TOTALS = ("neuron_total", "channel_total", "shared_expert")
_INDEXED = ("index", "value", "total")


__all__ = ["RANKED_KINDS", "ComponentRelevance", "RankedComponent", "ssm_head_channels"]
