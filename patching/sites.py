"""Site names that read the same across architectures, and where each one lives.

==============================  ===============================================  ====================
site                            what                                             tensor shape
==============================  ===============================================  ====================
``layer.{i}.resid``             residual stream after block ``i``                (batch, pos, d_model)
``layer.{i}.attn``              attention output (after ``o_proj``)              (batch, pos, d_model)
``layer.{i}.mlp``               MLP output (after ``down_proj``)                 (batch, pos, d_model)
``layer.{i}.mixer``             Mamba mixer output (Mamba / Mamba-2 only)        (batch, pos, d_model)
``layer.{i}.attn.head.{h}``     head ``h`` at the input of ``o_proj``            (batch, pos, head_dim)
``layer.{i}.mlp.neuron.{n}``    neuron ``n`` at the input of ``down_proj``       (batch, pos)
==============================  ===============================================  ====================

Heads are taken where they are still separate: the input of the output projection is
the concatenation of the heads' outputs, ``head_dim`` values each. Attention edges
(layer, head, query, key) live in :mod:`patching.edges`.

The map is per family, decided from the blocks' structure: Llama-style decoders
(``self_attn.o_proj`` + ``mlp.down_proj``: Llama, Mistral, Qwen2/3, Gemma 1-3, OLMo-2,
Granite) and Mamba-style blocks (``mixer``: Mamba, Mamba-2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from lrp_llm.errors import InputError, UnsupportedModelError

# The kinds a layer x position sweep can patch, and the kinds with an index.
POSITION_KINDS = ("resid", "attn", "mlp", "mixer")
INDEXED_KINDS = ("head", "neuron")

_NAME = re.compile(r"^layer\.(\d+)\.(resid|attn|mlp|mixer)(?:\.(head|neuron)\.(\d+))?$")


@dataclass(frozen=True)
class Site:
    """One place in the model; ``index`` is the head or neuron number for those kinds."""

    layer: int
    kind: str  # resid | attn | mlp | mixer | head | neuron
    index: int | None = None

    @property
    def name(self) -> str:
        if self.kind == "head":
            return f"layer.{self.layer}.attn.head.{self.index}"
        if self.kind == "neuron":
            return f"layer.{self.layer}.mlp.neuron.{self.index}"
        return f"layer.{self.layer}.{self.kind}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, name: str | Site) -> Site:
        if isinstance(name, Site):
            return name
        m = _NAME.match(name.strip())
        if (
            m is None
            or (m.group(3) == "head" and m.group(2) != "attn")
            or (m.group(3) == "neuron" and m.group(2) != "mlp")
        ):
            raise InputError(
                f"unknown site '{name}'; sites look like layer.3.resid, layer.3.attn, layer.3.mlp, "
                "layer.3.mixer, layer.3.attn.head.2 or layer.3.mlp.neuron.17"
            )
        layer, kind = int(m.group(1)), m.group(2)
        if m.group(3):
            return cls(layer, m.group(3), int(m.group(4)))
        return cls(layer, kind)


@dataclass(frozen=True)
class Location:
    """Where a site's tensor is: the output (or the input) of ``module``, optionally a slice
    ``[start:stop]`` of the last dimension (a head) or one column (a neuron)."""

    module: nn.Module
    where: str  # "output" | "input"
    start: int | None = None
    stop: int | None = None
    squeeze: bool = False  # neuron: the site tensor is (batch, pos), one column


class SiteMap:
    """The sites of one model, per architecture family."""

    def __init__(self, model: nn.Module) -> None:
        from lrp_llm.mechanism.context import decoder_layers

        self.model = model
        layers = decoder_layers(model)
        if layers is None or len(layers) == 0:
            raise UnsupportedModelError(
                f"{type(model).__name__}: no list of blocks found; patching supports Llama-family and Mamba models"
            )
        self.layers = layers
        self.n_layers = len(layers)
        first = layers[0]
        attn = getattr(first, "self_attn", None)
        mlp = getattr(first, "mlp", None)
        if attn is not None and hasattr(attn, "o_proj") and mlp is not None and hasattr(mlp, "down_proj"):
            self.family = "llama"
            self.kinds: tuple[str, ...] = ("resid", "attn", "mlp", "head", "neuron")
            cfg = model.config
            self.n_heads = int(cfg.num_attention_heads)
            self.head_dim = int(getattr(attn, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
            self.n_neurons = int(mlp.down_proj.in_features)
        elif hasattr(first, "mixer"):
            self.family = "mamba"
            self.kinds = ("resid", "mixer")
            self.n_heads = 0
            self.head_dim = 0
            self.n_neurons = 0
        else:
            raise UnsupportedModelError(
                f"{type(model).__name__}: blocks of type {type(first).__name__} are not supported for patching; "
                "supported: Llama-family decoders (self_attn.o_proj + mlp.down_proj) and Mamba (mixer)"
            )

    # -- names ---------------------------------------------------------------------
    @property
    def position_kinds(self) -> tuple[str, ...]:
        """Kinds a layer x position sweep can patch for this family."""
        return tuple(k for k in POSITION_KINDS if k in self.kinds)

    def check(self, site: str | Site) -> Site:
        s = Site.parse(site)
        if s.kind not in self.kinds:
            raise InputError(
                f"site '{s.name}' does not exist in a {self.family}-family model; its kinds are {', '.join(self.kinds)}"
            )
        if not 0 <= s.layer < self.n_layers:
            raise InputError(
                f"site '{s.name}': layer {s.layer} is out of range; the model has layers 0..{self.n_layers - 1}"
            )
        if s.kind == "head" and not 0 <= int(s.index) < self.n_heads:
            raise InputError(
                f"site '{s.name}': head {s.index} is out of range; layers have heads 0..{self.n_heads - 1}"
            )
        if s.kind == "neuron" and not 0 <= int(s.index) < self.n_neurons:
            raise InputError(
                f"site '{s.name}': neuron {s.index} is out of range; MLPs have neurons 0..{self.n_neurons - 1}"
            )
        return s

    def expand(self, patterns: str | Iterable[str | Site]) -> list[Site]:
        """Site names, with ``*`` for every layer/head (``layer.*.mlp``) or a bare kind (``resid``)."""
        if isinstance(patterns, (str, Site)):
            patterns = [patterns]
        out: list[Site] = []
        for pattern in patterns:
            if isinstance(pattern, Site):
                out.append(self.check(pattern))
                continue
            p = pattern.strip()
            if p in self.kinds and p not in INDEXED_KINDS:
                p = f"layer.*.{p}"
            elif p == "head":
                p = "layer.*.attn.head.*"
            if "*" not in p:
                out.append(self.check(p))
                continue
            layers = range(self.n_layers)
            heads = range(self.n_heads)
            for i in layers:
                if p.endswith("head.*"):
                    names = [p.replace("*", str(i), 1).replace("*", str(h)) for h in heads]
                else:
                    names = [p.replace("*", str(i))]
                out.extend(self.check(n) for n in names)
        return out

    # -- modules -------------------------------------------------------------------
    def locate(self, site: str | Site) -> Location:
        s = self.check(site)
        layer = self.layers[s.layer]
        if s.kind == "resid":
            return Location(layer, "output")
        if s.kind == "attn":
            return Location(layer.self_attn, "output")
        if s.kind == "mlp":
            return Location(layer.mlp, "output")
        if s.kind == "mixer":
            return Location(layer.mixer, "output")
        if s.kind == "head":
            start = int(s.index) * self.head_dim
            return Location(layer.self_attn.o_proj, "input", start, start + self.head_dim)
        start = int(s.index)
        return Location(layer.mlp.down_proj, "input", start, start + 1, squeeze=True)

    def site(self, layer: int, kind: str, index: int | None = None) -> Site:
        return self.check(Site(layer, kind, index))


def site_map(model: nn.Module) -> SiteMap:
    """The :class:`SiteMap` of ``model`` (cheap: walks the module tree once)."""
    return SiteMap(model)


def normalise_positions(positions: Sequence[int] | int | None, length: int, *, what: str = "position") -> list[int]:
    """Absolute positions (negative ones count from the end); an error names the valid range."""
    if positions is None:
        return list(range(length))
    if isinstance(positions, int):
        positions = [positions]
    out: list[int] = []
    for p in positions:
        q = int(p) + length if int(p) < 0 else int(p)
        if not 0 <= q < length:
            raise InputError(f"{what} {int(p)} is out of range for a sequence of {length} tokens (0..{length - 1})")
        out.append(q)
    return out
